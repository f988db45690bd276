namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// Fine-tunes one served checkpoint size, keyed by that size ("small"), and hot-swaps the result into every
/// replica of it. Training runs on its own thread on the grain's silo, never on a grain turn; the grain stays
/// active until the run ends. One run per size at a time.
/// </summary>
/// <remarks>
/// The run starts from a copy of the size's current checkpoint and writes a training run directory under
/// CheckpointDirectory/.runs/. When it finishes, the new weights replace CheckpointDirectory/size (the previous ones
/// move to CheckpointDirectory/.previous/) and each replica reloads them; streams already running finish on the
/// old weights. A cancelled or failed run publishes nothing. Silos hosting replicas of the size are expected to
/// share the checkpoint directory (one machine, or shared storage).
/// </remarks>
public interface ITrainingGrain : IGrainWithStringKey
{
    /// <summary>Starts fine-tuning. Fails with an ArgumentException for a setting out of range, prepared data that
    /// is missing, or a size with no checkpoint, and with an InvalidOperationException while a run is going.</summary>
    ValueTask<TrainingStatus> StartAsync(FineTuneRequest request, CancellationToken cancellationToken = default);

    /// <summary>Where the current or last run stands.</summary>
    ValueTask<TrainingStatus> GetStatusAsync(CancellationToken cancellationToken = default);

    /// <summary>Stops a running fine-tune at the next step; its checkpoint is saved in its run directory but not
    /// published.</summary>
    ValueTask<TrainingStatus> CancelAsync(CancellationToken cancellationToken = default);
}

/// <summary>A fine-tuning run's settings. Defaults are the paper's: block size 512, batch 8, gradient accumulation
/// 1, learning rate 5e-5, 3 epochs, no weight decay.</summary>
/// <param name="DataDirectory">A directory written by the Training project's prepare command, as the silo sees it.</param>
/// <param name="MaxSteps">Stop after this many optimizer steps; null: the epochs decide.</param>
[GenerateSerializer, Immutable]
public sealed record FineTuneRequest(
    [property: Id(0)] string DataDirectory,
    [property: Id(1)] int Epochs = 3,
    [property: Id(2)] long? MaxSteps = null,
    [property: Id(3)] double LearningRate = 5e-5,
    [property: Id(4)] int BlockSize = 512,
    [property: Id(5)] int BatchSize = 8,
    [property: Id(6)] int GradientAccumulation = 1,
    [property: Id(7)] double WeightDecay = 0,
    [property: Id(8)] long Seed = 42);

/// <summary>Where a fine-tuning run is.</summary>
public enum TrainingState
{
    /// <summary>No run since the grain was activated.</summary>
    Idle,
    Running,
    /// <summary>Finished, published and reloaded into the replicas.</summary>
    Succeeded,
    Cancelled,
    Failed,
}

/// <summary>A fine-tuning run's progress and outcome.</summary>
/// <param name="Message">What happened last, in words (the error for a failed run).</param>
/// <param name="Reloaded">The replicas that now serve the new weights.</param>
[GenerateSerializer, Immutable]
public sealed record TrainingStatus(
    [property: Id(0)] string Size,
    [property: Id(1)] TrainingState State,
    [property: Id(2)] long Step,
    [property: Id(3)] long TotalSteps,
    [property: Id(4)] double? TrainLoss,
    [property: Id(5)] double? EvalLoss,
    [property: Id(6)] string? RunDirectory,
    [property: Id(7)] string Message,
    [property: Id(8)] IReadOnlyList<string> Reloaded)
{
    /// <summary>exp(eval loss).</summary>
    public double? Perplexity => EvalLoss is { } loss ? Math.Exp(loss) : null;
}
