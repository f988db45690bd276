using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Silo;

/// <summary>Loads every checkpoint found at start-up (through its model grain), so the first request does not
/// pay for it and /healthz reports ready once a model is served.</summary>
public sealed partial class ModelPreloader(OrleansGpt.Grains.ModelHost host, IGrainFactory grains, ILogger<ModelPreloader> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var sizes = host.AvailableSizes();
        if (sizes.Count == 0)
            NoCheckpoints(host.CheckpointDirectory);
        foreach (var size in sizes)
        {
            try
            {
                var info = await grains.GetGrain<IModelGrain>($"{size}@cpu:0").GetInfoAsync(stoppingToken);
                Loaded(info.Key, info.Parameters, info.Provenance);
            }
            catch (ArgumentException e)
            {
                FailedToLoad(size, e.Message);
            }
        }
    }

    [LoggerMessage(1, LogLevel.Warning, "No checkpoints under {Directory}: nothing to serve. Train one with the Training project or copy a Hugging Face GPT-2 directory there.")]
    private partial void NoCheckpoints(string directory);

    [LoggerMessage(2, LogLevel.Information, "Serving {Key}: {Parameters} parameters ({Provenance})")]
    private partial void Loaded(string key, long parameters, string provenance);

    [LoggerMessage(3, LogLevel.Error, "Could not load the '{Size}' checkpoint: {Reason}")]
    private partial void FailedToLoad(string size, string reason);
}
