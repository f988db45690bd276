namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// The versions of one checkpoint size (the key: "tiny", "small", ...) and which one the cluster serves. Versions
/// are content hashes of checkpoints in the shared checkpoint store; the registry keeps their provenance and the
/// active version in persistent grain storage, so a restarted cluster serves what it served before.
/// </summary>
/// <remarks>
/// A promotion is rolled out in two phases: every replica of the size, on every silo, first loads the new version
/// beside the one it serves (off its decode thread; a replica that cannot load or verify it fails the promotion and
/// nothing changes), then each switches between two decode steps. Requests already running finish on the version
/// they started with. Promotions of one size run one at a time.
/// </remarks>
public interface ICheckpointRegistryGrain : IGrainWithStringKey
{
    /// <summary>Records a version published to the store (idempotent). With <paramref name="activateIfNone"/> it
    /// becomes the active version when the size has none yet (a silo bringing in its checkpoint directory).</summary>
    ValueTask<CheckpointVersion> RegisterAsync(CheckpointVersion version, bool activateIfNone = false, CancellationToken cancellationToken = default);

    /// <summary>Every version, oldest first, the active one marked (versions found in the checkpoint store are
    /// registered as they are found).</summary>
    ValueTask<IReadOnlyList<CheckpointVersion>> GetVersionsAsync(CancellationToken cancellationToken = default);

    /// <summary><paramref name="version"/> and its ancestors, newest first, following each version's parent (the
    /// version it was fine-tuned from) back to one trained from scratch or brought in from outside; empty for a version
    /// the registry does not know. From the registry's own records (no store scan), removed versions included.</summary>
    ValueTask<IReadOnlyList<CheckpointVersion>> GetLineageAsync(string version, CancellationToken cancellationToken = default);

    /// <summary>The version replicas serve, or null when the size has none.</summary>
    ValueTask<string?> GetActiveAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Makes <paramref name="version"/> active on every replica (see the remarks). ArgumentException for a version
    /// that is not registered; InvalidOperationException, naming the replica and the reason, when one cannot load
    /// it, in which case every replica keeps its current version.
    /// </summary>
    ValueTask<Promotion> PromoteAsync(string version, CancellationToken cancellationToken = default);

    /// <summary>Promotes the version that was active before the current one. InvalidOperationException when there is none.</summary>
    ValueTask<Promotion> RollbackAsync(CancellationToken cancellationToken = default);
}

/// <summary>One version of a size in the checkpoint store, and how it was made.</summary>
/// <param name="Version">Content hash (16 hex digits) of the checkpoint's config and weights.</param>
/// <param name="Parent">The version it was fine-tuned from, if any: following parents gives the whole lineage.</param>
/// <param name="Kind">untrained, trained-from-scratch, fine-tuned or unknown.</param>
/// <param name="Data">The prepared data it was trained on, if this project trained it.</param>
/// <param name="Settings">The training settings, in words.</param>
/// <param name="Active">Whether replicas serve it now.</param>
/// <param name="Removed">Its files were deleted by ModelHost:Retention:Versions: it can no longer be promoted, but its
/// provenance stays for the lineage of the versions fine-tuned from it.</param>
[GenerateSerializer, Immutable]
public sealed record CheckpointVersion(
    [property: Id(0)] string Size,
    [property: Id(1)] string Version,
    [property: Id(2)] DateTimeOffset Created,
    [property: Id(3)] string? Parent,
    [property: Id(4)] string Kind,
    [property: Id(5)] string Description,
    [property: Id(6)] long TokensSeen,
    [property: Id(7)] string? Data,
    [property: Id(8)] string? Settings,
    [property: Id(9)] double? EvalPerplexity,
    [property: Id(10)] bool Active = false,
    [property: Id(11)] bool Removed = false);

/// <summary>The outcome of a promotion or rollback.</summary>
/// <param name="Previous">The version that was active before; null when there was none.</param>
/// <param name="Replicas">The replicas ("size@node/device") that now serve <paramref name="Version"/>.</param>
/// <param name="LoadSeconds">The longest time one replica took to fetch, verify and load the version (it kept serving meanwhile).</param>
[GenerateSerializer, Immutable]
public sealed record Promotion(
    [property: Id(0)] string Size,
    [property: Id(1)] string Version,
    [property: Id(2)] string? Previous,
    [property: Id(3)] IReadOnlyList<string> Replicas,
    [property: Id(4)] double LoadSeconds);
