namespace OrleansGpt.Hosting;

/// <summary>The grain storages OrleansGpt's grains name in their [PersistentState] attributes. Which provider backs
/// them (memory or Redis) is configuration, chosen once in <see cref="ClusterHostingExtensions"/>.</summary>
public static class GrainStorage
{
    /// <summary>Session grains: each user's settings and history.</summary>
    public const string Sessions = "sessions";

    /// <summary>Training grains: the current fine-tune and the history of past ones.</summary>
    public const string Training = "training";

    /// <summary>Checkpoint registry grains: the versions of each size and which one is active.</summary>
    public const string Checkpoints = "checkpoints";

    /// <summary>Evaluation grains: human judgements of real against generated abstracts.</summary>
    public const string Evaluations = "evaluations";

    /// <summary>Every storage above.</summary>
    public static IReadOnlyList<string> All { get; } = [Sessions, Training, Checkpoints, Evaluations];
}
