using OrleansGpt.Grains;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Silo;

/// <summary>
/// At start-up: brings each size in the checkpoint directory into the versioned store and registers it (it becomes
/// active only for a size that has no active version yet, so a restarted cluster keeps serving what it served), then
/// loads this silo's replicas through their model grains, which the placement director puts here because this silo
/// owns their devices. The first request does not pay for loading, and /healthz reports ready once a model is served.
/// </summary>
public sealed partial class ModelPreloader(
    ModelHost host, IGrainFactory grains, IClusterMembershipService membership, ILocalSiloDetails silo, ILogger<ModelPreloader> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Grains can be placed once this silo is active in the cluster's membership (and so are its devices).
        while (membership.CurrentSnapshot.GetSiloStatus(silo.SiloAddress) != SiloStatus.Active)
            await Task.Delay(TimeSpan.FromMilliseconds(200), stoppingToken);

        foreach (string size in CheckpointFolder.Sizes(host.CheckpointDirectory))
        {
            try
            {
                var (here, active) = await CheckpointRegistryGrain.ImportAsync(grains, host, size, stoppingToken);
                if (here != active)
                    NotActive(size, here, active);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                FailedToLoad(size, e.Message);
            }
        }

        var replicas = host.Inventory.Replicas;
        if (replicas.Count == 0)
            NoCheckpoints(host.CheckpointDirectory);
        foreach (var replica in replicas)
        {
            try
            {
                var info = await grains.GetGrain<IModelGrain>(replica.ToString()).GetInfoAsync(stoppingToken);
                Loaded(info.Key, info.Version, info.Parameters, info.Provenance);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Logged, never thrown: a replica that cannot load must not stop the silo serving the others.
                FailedToLoad(replica.ToString(), e.Message);
            }
        }
    }

    [LoggerMessage(1, LogLevel.Warning, "No checkpoints under {Directory} or in the checkpoint store: nothing to serve. Train one with the Training project or copy a Hugging Face GPT-2 directory there.")]
    private partial void NoCheckpoints(string directory);

    [LoggerMessage(2, LogLevel.Information, "Serving {Key} version {Version}: {Parameters} parameters ({Provenance})")]
    private partial void Loaded(string key, string version, long parameters, string provenance);

    [LoggerMessage(3, LogLevel.Error, "Could not load {Replica}: {Reason}")]
    private partial void FailedToLoad(string replica, string reason);

    [LoggerMessage(4, LogLevel.Warning, "{Size}: the checkpoint directory holds version {Version}, which is registered but not active (active: {Active}); promote it to serve it")]
    private partial void NotActive(string size, string version, string? active);
}
