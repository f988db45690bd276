namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// Fine-tunes one served checkpoint size, keyed by that size ("small"), publishes the result as a new version in the
/// checkpoint store and (unless asked not to) promotes it on every replica. The grain lives on a silo that lists a
/// device in ModelHost:TrainingDevices, never on a serving-only silo; training runs on its own thread there, never on
/// a grain turn. One run per size at a time. Its status and the history of past runs are persisted.
/// </summary>
/// <remarks>
/// The run starts from the size's active version and writes a run directory under the store's .runs/ folder,
/// checkpointing every <see cref="FineTuneRequest.CheckpointEvery"/> steps. If its silo dies, the status says
/// <see cref="TrainingState.Interrupted"/> and <see cref="ResumeAsync"/> continues from the last checkpoint (exactly,
/// as the trainer's resume does). A cancelled or failed run publishes nothing.
/// </remarks>
public interface ITrainingGrain : IGrainWithStringKey
{
    /// <summary>Starts fine-tuning. Fails with an ArgumentException for a setting out of range, prepared data that
    /// is missing, or a size with no active version, and with an InvalidOperationException while a run is going.</summary>
    ValueTask<TrainingStatus> StartAsync(FineTuneRequest request, CancellationToken cancellationToken = default);

    /// <summary>Where the current or last run stands.</summary>
    ValueTask<TrainingStatus> GetStatusAsync(CancellationToken cancellationToken = default);

    /// <summary>Finished, cancelled, failed and interrupted runs, newest last (the last 50).</summary>
    ValueTask<IReadOnlyList<TrainingStatus>> GetHistoryAsync(CancellationToken cancellationToken = default);

    /// <summary>Stops a running fine-tune at the next step; its checkpoint is saved in its run directory but not
    /// published.</summary>
    ValueTask<TrainingStatus> CancelAsync(CancellationToken cancellationToken = default);

    /// <summary>Continues an interrupted run (its silo died) from its last checkpoint. InvalidOperationException when
    /// the last run was not interrupted.</summary>
    ValueTask<TrainingStatus> ResumeAsync(CancellationToken cancellationToken = default);
}

/// <summary>A fine-tuning run's settings. Defaults are the paper's: block size 512, batch 8, gradient accumulation
/// 1, learning rate 5e-5, 3 epochs, no weight decay.</summary>
/// <param name="DataDirectory">A directory written by the Training project's prepare command, as the silo sees it.</param>
/// <param name="MaxSteps">Stop after this many optimizer steps; null: the epochs decide.</param>
/// <param name="CheckpointEvery">Evaluate and save a resumable checkpoint every N steps (0: only at the end).</param>
/// <param name="Promote">Promote the published version on every replica when the run ends.</param>
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
    [property: Id(8)] long Seed = 42,
    [property: Id(9)] int CheckpointEvery = 50,
    [property: Id(10)] bool Promote = true);

/// <summary>Where a fine-tuning run is.</summary>
public enum TrainingState
{
    /// <summary>No run since the grain was activated.</summary>
    Idle,
    Running,
    /// <summary>Finished and published (and promoted, if the request asked for it).</summary>
    Succeeded,
    Cancelled,
    Failed,
    /// <summary>The silo running it stopped before the end; <see cref="ITrainingGrain.ResumeAsync"/> continues it.</summary>
    Interrupted,
}

/// <summary>A fine-tuning run's progress and outcome.</summary>
/// <param name="Message">What happened last, in words (the error for a failed run).</param>
/// <param name="Reloaded">The replicas that now serve the new weights.</param>
/// <param name="Version">The version it started from while running; the version it published once succeeded.</param>
/// <param name="Node">The silo node and training device it runs on.</param>
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
    [property: Id(8)] IReadOnlyList<string> Reloaded,
    [property: Id(9)] string? Version = null,
    [property: Id(10)] string? Node = null)
{
    /// <summary>exp(eval loss).</summary>
    public double? Perplexity => EvalLoss is { } loss ? Math.Exp(loss) : null;
}
