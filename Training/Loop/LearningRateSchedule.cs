namespace OrleansGpt.Training.Loop;

/// <summary>How the learning rate moves after warm-up (Hugging Face's get_*_schedule_with_warmup).</summary>
public enum LearningRateShape
{
    /// <summary>Stays at the peak.</summary>
    Constant,

    /// <summary>Falls linearly to 0 at the last step (the Trainer's default).</summary>
    Linear,

    /// <summary>Falls along half a cosine to 0 at the last step.</summary>
    Cosine,
}

/// <summary>Linear warm-up from 0 to the peak over WarmupSteps, then Shape until TotalSteps.</summary>
public sealed record LearningRateSchedule(double Peak, LearningRateShape Shape, long WarmupSteps, long TotalSteps)
{
    /// <summary>The rate for optimizer step <paramref name="step"/> (0-based).</summary>
    public double At(long step)
    {
        if (step < WarmupSteps)
            return Peak * (step + 1) / WarmupSteps;
        if (Shape == LearningRateShape.Constant || TotalSteps <= WarmupSteps)
            return Peak;
        double progress = Math.Clamp((double)(step - WarmupSteps) / (TotalSteps - WarmupSteps), 0, 1);
        return Shape == LearningRateShape.Linear
            ? Peak * (1 - progress)
            : Peak * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
