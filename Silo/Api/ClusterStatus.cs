using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Silo.Api;

/// <summary>
/// GET /v1/cluster, what `Client -- ops status` prints: every silo Orleans' membership knows (and its state), every
/// replica with its device, version, queue depth and tokens per second, and each size's active version.
/// </summary>
public static class ClusterStatus
{
    /// <summary>How long the two load readings that give tokens per second are apart.</summary>
    private static readonly TimeSpan s_rateWindow = TimeSpan.FromSeconds(1);

    public static async Task<object> ReadAsync(IGrainFactory grains, CancellationToken cancellationToken)
    {
        var hosts = await grains.GetGrain<IManagementGrain>(0).GetDetailedHosts(onlyActive: false);
        var replicas = await grains.GetGrain<IModelRouterGrain>(0).GetReplicasAsync(cancellationToken);
        var before = await Task.WhenAll(replicas.Select(r => ReadAsync(grains, r.Key, cancellationToken)));
        await Task.Delay(s_rateWindow, cancellationToken);
        var after = await Task.WhenAll(replicas.Select(r => ReadAsync(grains, r.Key, cancellationToken)));
        var sizes = replicas.Select(r => r.Size).Distinct().ToList();
        var active = await Task.WhenAll(sizes.Select(s => grains.GetGrain<ICheckpointRegistryGrain>(s).GetActiveAsync(cancellationToken).AsTask()));
        return new
        {
            silos = hosts.OrderBy(h => h.SiloName, StringComparer.Ordinal).Select(h => new
            {
                name = h.SiloName,
                address = h.SiloAddress.ToString(),
                status = h.Status.ToString().ToLowerInvariant(),
                started = h.StartTime,
            }),
            models = sizes.Select((size, i) => new { model = size, active_version = active[i] }),
            replicas = replicas.Select((r, i) => new
            {
                key = r.Key,
                node = r.Node,
                device = r.Device,
                version = after[i].Info?.Version,
                running = after[i].Load?.Running,
                queued = after[i].Load?.Queued,
                slots = after[i].Load?.Slots,
                tokens_per_second = after[i].Load is { } a && before[i].Load is { } b ? (a.Generated - b.Generated) / s_rateWindow.TotalSeconds : (double?)null,
                error = after[i].Error,
            }),
        };
    }

    private static async Task<(ModelInfo? Info, ModelLoad? Load, string? Error)> ReadAsync(IGrainFactory grains, string key, CancellationToken cancellationToken)
    {
        try
        {
            var grain = grains.GetGrain<IModelGrain>(key);
            return (await grain.GetInfoAsync(cancellationToken), await grain.GetLoadAsync(cancellationToken), null);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A replica that cannot answer (its silo is leaving, its load failed) is shown with the reason.
            return (null, null, e.Message);
        }
    }
}
