using Orleans.Concurrency;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Grains.Placement;

namespace OrleansGpt.Grains;

/// <summary>
/// Lists the replicas active silos advertise in their metadata and picks the least-loaded one for a size. A
/// stateless worker, so each silo routes with its own activation and the membership and metadata it already has.
/// </summary>
[StatelessWorker]
public sealed class ModelRouterGrain(IClusterMembershipService membership, DeviceInventories inventories) : Grain, IModelRouterGrain
{
    public async ValueTask<IReadOnlyList<ReplicaInfo>> GetReplicasAsync(CancellationToken cancellationToken = default) => await ReplicasAsync();

    public async ValueTask<string?> PickReplicaAsync(string size, IReadOnlyList<string>? exclude = null, CancellationToken cancellationToken = default)
    {
        var replicas = (await ReplicasAsync()).Where(r => r.Size == size && exclude?.Contains(r.Key) != true).ToList();
        if (replicas.Count <= 1)
            return replicas.FirstOrDefault()?.Key;
        // A replica that cannot report (its silo is leaving, its load failed) is skipped rather than failing the request;
        // one whose model fails what it is given is used only when every replica is as bad.
        var loads = await Task.WhenAll(replicas.Select(async r =>
        {
            try
            {
                var load = await GrainFactory.GetGrain<IModelGrain>(r.Key).GetLoadAsync(cancellationToken);
                return (r.Key, Load: load.Failing ? double.MaxValue : load.Utilisation);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                return (r.Key, Load: double.PositiveInfinity);
            }
        }));
        double least = loads.Min(l => l.Load);
        var candidates = loads.Where(l => l.Load == least).ToList();
        return candidates[Random.Shared.Next(candidates.Count)].Key;
    }

    private async Task<List<ReplicaInfo>> ReplicasAsync() =>
    [
        .. (await Task.WhenAll(membership.CurrentSnapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active)
            .Select(m => inventories.GetAsync(m.SiloAddress).AsTask())))
            .Where(inventory => inventory is not null)
            .SelectMany(inventory => inventory!.Replicas)
            .Select(key => new ReplicaInfo(key.ToString(), key.Size, key.Node!, key.Device))
            .DistinctBy(r => r.Key)
            .OrderBy(r => r.Size, StringComparer.Ordinal).ThenBy(r => r.Key, StringComparer.Ordinal),
    ];
}
