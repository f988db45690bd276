using Microsoft.Extensions.Logging;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Hosting;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Grains;

/// <summary>What a size's registry persists: its versions, the active one, and those active before it (for rollback).</summary>
[GenerateSerializer]
public sealed class CheckpointRegistryState
{
    [Id(0)] public List<CheckpointVersion> Versions { get; set; } = [];
    [Id(1)] public string? Active { get; set; }
    [Id(2)] public List<string> Previous { get; set; } = [];
}

/// <summary>
/// The checkpoint versions of one size and which one is active (see <see cref="ICheckpointRegistryGrain"/>). It keeps
/// metadata only: the weights stay in the checkpoint store, and replicas load them through their own silo's cache.
/// Reentrant, because a replica that a promotion activates asks this grain for the active version (and may register
/// its silo's checkpoint) while the promotion waits for it; so promotions take <see cref="_switching"/> to run one
/// after another, and every change of state takes <see cref="_writing"/> so that two writes never race.
/// </summary>
[Orleans.Concurrency.Reentrant]
public sealed partial class CheckpointRegistryGrain(
    [PersistentState("registry", GrainStorage.Checkpoints)] IPersistentState<CheckpointRegistryState> state,
    ModelHost host,
    ILogger<CheckpointRegistryGrain> logger) : Grain, ICheckpointRegistryGrain
{
    private readonly SemaphoreSlim _switching = new(1, 1);
    private readonly SemaphoreSlim _writing = new(1, 1);

    private string Size => this.GetPrimaryKeyString();

    public async ValueTask<CheckpointVersion> RegisterAsync(CheckpointVersion version, bool activateIfNone = false, CancellationToken cancellationToken = default)
    {
        if (version.Size != Size)
            throw new ArgumentException($"Version {version.Version} is of '{version.Size}', not '{Size}'", nameof(version));
        await _writing.WaitAsync(cancellationToken);
        try
        {
            return await RegisterLockedAsync(version, activateIfNone, cancellationToken);
        }
        finally
        {
            _writing.Release();
        }
    }

    private async Task<CheckpointVersion> RegisterLockedAsync(CheckpointVersion version, bool activateIfNone, CancellationToken cancellationToken)
    {
        bool changed = false;
        if (!state.State.Versions.Any(v => v.Version == version.Version))
        {
            state.State.Versions.Add(version with { Active = false });
            changed = true;
        }
        if (activateIfNone && state.State.Active is null)
        {
            state.State.Active = version.Version;
            changed = true;
            Activated(Size, version.Version, "first version registered");
        }
        if (changed)
            await state.WriteStateAsync(cancellationToken);
        return Mark(state.State.Versions.First(v => v.Version == version.Version));
    }

    public async ValueTask<IReadOnlyList<CheckpointVersion>> GetVersionsAsync(CancellationToken cancellationToken = default)
    {
        await SyncFromStoreAsync(cancellationToken);
        return [.. state.State.Versions.Select(Mark)];
    }

    public ValueTask<IReadOnlyList<CheckpointVersion>> GetLineageAsync(string version, CancellationToken cancellationToken = default)
    {
        var lineage = new List<CheckpointVersion>();
        for (var v = state.State.Versions.FirstOrDefault(x => x.Version == version); v is not null && lineage.All(l => l.Version != v.Version);
             v = state.State.Versions.FirstOrDefault(x => x.Version == v.Parent))
            lineage.Add(Mark(v));
        return ValueTask.FromResult<IReadOnlyList<CheckpointVersion>>(lineage);
    }

    public ValueTask<string?> GetActiveAsync(CancellationToken cancellationToken = default) => ValueTask.FromResult(state.State.Active);

    public async ValueTask<Promotion> PromoteAsync(string version, CancellationToken cancellationToken = default)
    {
        await _switching.WaitAsync(cancellationToken);
        try
        {
            if (!state.State.Versions.Any(v => v.Version == version))
                await SyncFromStoreAsync(cancellationToken);
            if (!state.State.Versions.Any(v => v.Version == version))
                throw new ArgumentException($"'{version}' is not a registered version of '{Size}'; registered: " +
                    string.Join(", ", state.State.Versions.Where(v => !v.Removed).Select(v => v.Version).DefaultIfEmpty("none")), nameof(version));
            if (state.State.Versions.First(v => v.Version == version).Removed)
                throw new ArgumentException($"Version {version} of '{Size}' was removed from the store by ModelHost:Retention:Versions " +
                    $"(it keeps {host.Retention.Versions}); publish it again to serve it", nameof(version));
            return await SwitchAsync(version, rollback: false, cancellationToken);
        }
        finally
        {
            _switching.Release();
        }
    }

    public async ValueTask<Promotion> RollbackAsync(CancellationToken cancellationToken = default)
    {
        await _switching.WaitAsync(cancellationToken);
        try
        {
            if (state.State.Previous.Count == 0)
                throw new InvalidOperationException($"'{Size}' has no earlier active version to roll back to (active: {state.State.Active ?? "none"})");
            return await SwitchAsync(state.State.Previous[^1], rollback: true, cancellationToken);
        }
        finally
        {
            _switching.Release();
        }
    }

    /// <summary>Both phases over every replica of the size on every silo, then the new active version persisted.</summary>
    private async Task<Promotion> SwitchAsync(string version, bool rollback, CancellationToken cancellationToken)
    {
        string? previous = state.State.Active;
        var replicas = (await GrainFactory.GetGrain<IModelRouterGrain>(0).GetReplicasAsync(cancellationToken)).Where(r => r.Size == Size).ToList();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var prepared = await Task.WhenAll(replicas.Select(async r =>
        {
            try
            {
                await GrainFactory.GetGrain<IModelGrain>(r.Key).PrepareVersionAsync(version, cancellationToken);
                return (r.Key, Error: (string?)null);
            }
            catch (Exception e)
            {
                return (r.Key, Error: e.Message);
            }
        }));
        double loadSeconds = clock.Elapsed.TotalSeconds;
        if (prepared.FirstOrDefault(p => p.Error is not null) is { Error: not null } failed)
        {
            await Task.WhenAll(prepared.Where(p => p.Error is null).Select(p => GrainFactory.GetGrain<IModelGrain>(p.Key).DiscardVersionAsync(version).AsTask()));
            PromotionFailed(Size, version, failed.Key, failed.Error);
            throw new InvalidOperationException($"Promoting '{Size}' to {version} failed on {failed.Key}: {failed.Error}. " +
                $"Every replica keeps serving {previous ?? "what it served"}.");
        }

        // Persisted before the switch: a replica activated from now on (a silo restarting) loads the new version.
        await _writing.WaitAsync(cancellationToken);
        try
        {
            previous = state.State.Active;
            if (rollback)
                state.State.Previous.RemoveAt(state.State.Previous.Count - 1);
            else if (previous is not null && previous != version)
                state.State.Previous.Add(previous);
            state.State.Active = version;
            await state.WriteStateAsync(cancellationToken);
        }
        finally
        {
            _writing.Release();
        }
        await Task.WhenAll(replicas.Select(r => GrainFactory.GetGrain<IModelGrain>(r.Key).ActivateVersionAsync(version, cancellationToken).AsTask()));
        // Only now that no replica serves the old versions any more may retention delete their files.
        await _writing.WaitAsync(cancellationToken);
        try
        {
            if (await PruneLockedAsync(cancellationToken))
                await state.WriteStateAsync(cancellationToken);
        }
        finally
        {
            _writing.Release();
        }
        Activated(Size, version, rollback ? $"rolled back from {previous}" : $"promoted over {previous ?? "none"}");
        return new Promotion(Size, version, previous, [.. replicas.Select(r => r.Key)], loadSeconds);
    }

    /// <summary>
    /// Brings CheckpointDirectory/SIZE on <paramref name="host"/>'s silo (or else the store's newest version of the size)
    /// into the registry, active if the size has no active version yet; returns the version brought in and the size's
    /// active version (they differ when the registry already serves another). ArgumentException saying how to get a
    /// checkpoint when there is none.
    /// </summary>
    public static async Task<(string Imported, string Active)> ImportAsync(IGrainFactory grains, ModelHost host, string size, CancellationToken cancellationToken = default)
    {
        // A silo with the size in its checkpoint directory brings that in; one without it (another machine sharing the
        // store) offers the newest version the store already holds.
        var stored = CheckpointFolder.Sizes(host.CheckpointDirectory).Contains(size) ? [] : host.Store.Versions(size);
        var manifest = stored.Count == 0 ? await Task.Run(() => host.Import(size), cancellationToken) : stored[^1];
        var registry = grains.GetGrain<ICheckpointRegistryGrain>(size);
        await registry.RegisterAsync(From(manifest), activateIfNone: true, cancellationToken);
        return (manifest.Version, (await registry.GetActiveAsync(cancellationToken))!);
    }

    /// <summary>Registers versions that reached the shared store without this grain (Training -- publish, a copy by
    /// hand), so an operator can list and promote them.</summary>
    private async Task SyncFromStoreAsync(CancellationToken cancellationToken)
    {
        var stored = await Task.Run(() => host.Store.Versions(Size), cancellationToken);
        await _writing.WaitAsync(cancellationToken);
        try
        {
            var missing = stored.Where(m => !state.State.Versions.Any(v => v.Version == m.Version)).Select(From).ToList();
            if (missing.Count == 0)
                return;
            state.State.Versions.AddRange(missing);
            await state.WriteStateAsync(cancellationToken);
        }
        finally
        {
            _writing.Release();
        }
    }

    /// <summary>
    /// Applies ModelHost:Retention:Versions after a switch (caller holds <see cref="_writing"/> and persists a change): the store
    /// keeps the active version, then the rollback targets most recent first, then the newest others; the rest lose
    /// their files and are marked removed, their provenance kept. Rollback targets whose files are gone are dropped.
    /// (Not on registering: a version just published must stay until a promotion has had the chance to use it.)
    /// </summary>
    /// <returns>Whether anything was removed (and so needs persisting).</returns>
    private async Task<bool> PruneLockedAsync(CancellationToken cancellationToken)
    {
        int limit = Math.Max(1, host.Retention.Versions);
        var live = state.State.Versions.Where(v => !v.Removed).ToList();
        if (live.Count <= limit)
            return false;
        var keep = new List<string>();
        void Keep(string? version)
        {
            if (version is not null && keep.Count < limit && !keep.Contains(version) && live.Any(v => v.Version == version))
                keep.Add(version);
        }
        Keep(state.State.Active);
        for (int i = state.State.Previous.Count - 1; i >= 0; i--)
            Keep(state.State.Previous[i]);
        foreach (var v in live.OrderByDescending(v => v.Created))
            Keep(v.Version);
        var doomed = live.Where(v => !keep.Contains(v.Version)).ToList();
        await Task.Run(() =>
        {
            foreach (var v in doomed)
                host.Store.Remove(Size, v.Version);
        }, cancellationToken);
        for (int i = 0; i < state.State.Versions.Count; i++)
            if (doomed.Any(d => d.Version == state.State.Versions[i].Version))
                state.State.Versions[i] = state.State.Versions[i] with { Removed = true };
        state.State.Previous.RemoveAll(v => !keep.Contains(v));
        Pruned(Size, doomed.Count, limit);
        return true;
    }

    private CheckpointVersion Mark(CheckpointVersion v) => v with { Active = v.Version == state.State.Active };

    /// <summary>A store manifest as the registry records it.</summary>
    public static CheckpointVersion From(CheckpointManifest m) =>
        new(m.Size, m.Version, m.Created, m.Parent, m.Kind, m.Description, m.TokensSeen, m.Data, m.Settings, m.EvalPerplexity);

    [LoggerMessage(1, LogLevel.Information, "{Size}: serving version {Version} ({How})")]
    private partial void Activated(string size, string version, string how);

    [LoggerMessage(3, LogLevel.Information, "{Size}: removed the files of {Count} old version(s) (ModelHost:Retention:Versions = {Limit})")]
    private partial void Pruned(string size, int count, int limit);

    [LoggerMessage(2, LogLevel.Warning, "{Size}: promotion to {Version} refused, {Replica} could not load it: {Reason}")]
    private partial void PromotionFailed(string size, string version, string replica, string reason);
}
