using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Silo;

/// <summary>Loads this silo's replicas at start-up (through their model grains, which the placement director puts
/// here because this silo owns their devices), so the first request does not pay for it and /healthz reports
/// ready once a model is served.</summary>
public sealed partial class ModelPreloader(OrleansGpt.Grains.ModelHost host, IGrainFactory grains, ILogger<ModelPreloader> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var replicas = host.Inventory.Replicas;
        if (replicas.Count == 0)
            NoCheckpoints(host.CheckpointDirectory);
        foreach (var replica in replicas)
        {
            try
            {
                var info = await grains.GetGrain<IModelGrain>(replica.ToString()).GetInfoAsync(stoppingToken);
                Loaded(info.Key, info.Parameters, info.Provenance);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                FailedToLoad(replica.ToString(), e.Message);
            }
        }
    }

    [LoggerMessage(1, LogLevel.Warning, "No checkpoints under {Directory}: nothing to serve. Train one with the Training project or copy a Hugging Face GPT-2 directory there.")]
    private partial void NoCheckpoints(string directory);

    [LoggerMessage(2, LogLevel.Information, "Serving {Key}: {Parameters} parameters ({Provenance})")]
    private partial void Loaded(string key, long parameters, string provenance);

    [LoggerMessage(3, LogLevel.Error, "Could not load {Replica}: {Reason}")]
    private partial void FailedToLoad(string replica, string reason);
}
