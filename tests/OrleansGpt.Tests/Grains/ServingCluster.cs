using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Orleans.TestingHost;
using OrleansGpt.Grains;
using OrleansGpt.Hosting;
using OrleansGpt.Silo.Api;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Grains;

/// <summary>
/// An in-process cluster of model-host silos sharing a temporary checkpoint directory, and the silo's HTTP API on
/// a real Kestrel port (127.0.0.1, a free port), backed by the cluster and the first silo's model host. Silo
/// <c>i</c> is configured by <c>configure(i, options)</c> on top of the checkpoint directory.
/// </summary>
public sealed class ServingCluster : IAsyncDisposable
{
    private readonly WebApplication _api;
    private readonly TestModels.TempDirectory _checkpoints;

    private ServingCluster(InProcessTestCluster cluster, WebApplication api, TestModels.TempDirectory checkpoints)
    {
        Cluster = cluster;
        _api = api;
        _checkpoints = checkpoints;
        Api = new HttpClient { BaseAddress = new Uri(api.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()) };
    }

    public InProcessTestCluster Cluster { get; }

    /// <summary>A client for the HTTP API.</summary>
    public HttpClient Api { get; }

    public IGrainFactory Grains => Cluster.Client;

    /// <summary>The silos' checkpoint directory (one sub-directory per size).</summary>
    public string CheckpointDirectory => _checkpoints.Path;

    /// <summary>Starts silos serving the random checkpoints <paramref name="models"/> lists: (size, config, seed,
    /// description), saved as "untrained" before the silos start (they serve the sizes present at start);
    /// <paramref name="alter"/> may change a model's weights before it is saved.</summary>
    public static async Task<ServingCluster> StartAsync((string Size, GptConfig Config, long Seed, string Description)[] models,
        Action<int, ModelHostOptions> configure, int silos = 1, Action<string, Gpt>? alter = null, Action<EvaluationOptions>? evaluation = null)
    {
        var directory = TestModels.TempDir();
        foreach (var (size, config, seed, description) in models)
            using (var model = TestModels.Random(config, seed))
            {
                alter?.Invoke(size, model);
                Gpt2Checkpoint.Save(model, Path.Combine(directory.Path, size), new ModelProvenance("untrained", description));
            }
        string checkpoints = directory.Path;
        int started = 0;
        var builder = new InProcessTestClusterBuilder((short)silos);
        builder.ConfigureSilo((_, silo) =>
        {
            int index = Interlocked.Increment(ref started) - 1;
            silo.AddOrleansGptStorage(new ClusterSettings());
            if (evaluation is not null)
                silo.Services.Configure(evaluation);
            silo.AddOrleansGptServing(o =>
            {
                o.CheckpointDirectory = checkpoints;
                o.Precision = "fp32";
                configure(index, o);
            });
        });
        var cluster = builder.Build();
        await cluster.DeployAsync();

        var web = WebApplication.CreateBuilder();
        web.WebHost.UseUrls("http://127.0.0.1:0");
        web.Logging.SetMinimumLevel(LogLevel.Warning);
        web.Services.AddSingleton<IGrainFactory>(cluster.Client);
        web.Services.AddOrleansGptApi();
        web.Services.AddSingleton(cluster.Silos[0].ServiceProvider.GetRequiredService<ModelHost>());
        var api = web.Build();
        api.MapOrleansGptPages();
        api.MapOrleansGptApi();
        await api.StartAsync();
        return new ServingCluster(cluster, api, directory);
    }

    /// <summary>The model host of the silo whose node is <paramref name="node"/>.</summary>
    public ModelHost Host(string node) => Cluster.Silos
        .Select(s => s.ServiceProvider.GetRequiredService<ModelHost>())
        .Single(h => h.Inventory.Node == node);

    public async ValueTask DisposeAsync()
    {
        Api.Dispose();
        await _api.StopAsync();
        await _api.DisposeAsync();
        await Cluster.DisposeAsync();
        _checkpoints.Dispose();
    }
}
