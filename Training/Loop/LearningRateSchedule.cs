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

    /// <summary>Warm-up, stable, decay: stays at the peak for the first 80% of the decay's way (by default), then falls linearly to 0
    /// (Hu et al. 2024, MiniCPM; Hägele et al. 2024). A short run spends more of its steps at a useful rate than under
    /// cosine, whose average is half the peak, and still ends annealed.</summary>
    Wsd,
}

/// <summary>Linear warm-up from 0 to the peak over WarmupSteps, then Shape until TotalSteps.</summary>
/// <param name="WsdDecayShare">The share of the run a <see cref="LearningRateShape.Wsd"/> schedule spends decaying.</param>
public sealed record LearningRateSchedule(double Peak, LearningRateShape Shape, long WarmupSteps, long TotalSteps, double WsdDecayShare = LearningRateSchedule.DefaultWsdDecayShare)
{
    /// <summary>The rate for optimizer step <paramref name="step"/> (0-based).</summary>
    public double At(long step) => At(step, Progress(step));

    /// <summary>How far the decay has come at <paramref name="step"/> by steps alone (0 to 1).</summary>
    public double Progress(long step) =>
        TotalSteps <= WarmupSteps ? 0 : Math.Clamp((double)(step - WarmupSteps) / (TotalSteps - WarmupSteps), 0, 1);

    /// <summary>The rate for step <paramref name="step"/> when the decay has come <paramref name="progress"/> of
    /// its way (0 to 1): a run with a time limit measures progress by the share of its time spent.</summary>
    public double At(long step, double progress)
    {
        if (step < WarmupSteps)
            return Peak * (step + 1) / WarmupSteps;
        if (Shape == LearningRateShape.Constant)
            return Peak;
        progress = Math.Clamp(progress, 0, 1);
        return Shape switch
        {
            LearningRateShape.Linear => Peak * (1 - progress),
            LearningRateShape.Cosine => Peak * 0.5 * (1 + Math.Cos(Math.PI * progress)),
            _ => progress <= 1 - WsdDecayShare ? Peak : Peak * (1 - progress) / WsdDecayShare,
        };
    }

    /// <summary>The share of the run a <see cref="LearningRateShape.Wsd"/> schedule spends decaying by default: Hägele et
    /// al. found 20% matching or beating cosine across their scales.</summary>
    public const double DefaultWsdDecayShare = 0.2;
}
