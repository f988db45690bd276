using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OrleansGpt.Silo.Api;
using Orleans.TestingHost;
using OrleansGpt.Grains;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Tests.Grains;

/// <summary>One in-process silo for all grain tests, serving a small random "tiny" checkpoint.</summary>
public sealed class ClusterFixture : IDisposable
{
    private static string s_checkpoints = "";
    private readonly TestModels.TempDirectory _directory = TestModels.TempDir();

    public ClusterFixture()
    {
        // GPT-2's vocabulary: the session grain tokenizes titles.
        using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed: 5))
            Gpt2Checkpoint.Save(model, Path.Combine(_directory.Path, "tiny"), new ModelProvenance("untrained", "grain test model"));
        // Sizes the silo advertises are those present at start; the reload test replaces this one's weights.
        using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed: 6))
            Gpt2Checkpoint.Save(model, Path.Combine(_directory.Path, "operated"), new ModelProvenance("untrained", "before the operator's reload"));
        using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed: 7))
            Gpt2Checkpoint.Save(model, Path.Combine(_directory.Path, "tunable"), new ModelProvenance("untrained", "before fine-tuning"));
        s_checkpoints = _directory.Path;

        var builder = new TestClusterBuilder(1);
        builder.AddSiloBuilderConfigurator<SiloConfigurator>();
        Cluster = builder.Build();
        Cluster.Deploy();

        // The silo's HTTP API on a real Kestrel port, backed by this cluster and the silo's own model host.
        var web = WebApplication.CreateBuilder();
        web.WebHost.UseUrls("http://127.0.0.1:0");
        web.Logging.SetMinimumLevel(LogLevel.Warning);
        web.Services.AddSingleton<IGrainFactory>(Cluster.Client);
        web.Services.AddOrleansGptApi();
        var silo = (InProcessSiloHandle)Cluster.Primary!;
        web.Services.AddSingleton(silo.SiloHost.Services.GetRequiredService<ModelHost>());
        _api = web.Build();
        _api.MapOrleansGptApi();
        _api.StartAsync().GetAwaiter().GetResult();
        Api = new HttpClient { BaseAddress = new Uri(_api.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()) };
    }

    private readonly WebApplication _api;

    public TestCluster Cluster { get; }

    /// <summary>The silo's checkpoint directory (one sub-directory per served size).</summary>
    public string CheckpointDirectory => _directory.Path;

    /// <summary>A client for the HTTP API.</summary>
    public HttpClient Api { get; }

    public void Dispose()
    {
        Api.Dispose();
        _api.StopAsync().GetAwaiter().GetResult();
        Cluster.StopAllSilos();
        Cluster.Dispose();
        _directory.Dispose();
    }

    private sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder silo)
        {
            silo.AddMemoryGrainStorage(SessionGrain.StorageName);
            silo.AddOrleansGptServing(o =>
            {
                o.Node = "test";
                o.ShareDevices = true; // several sizes on the one CPU, as on a developer's machine
                o.CheckpointDirectory = s_checkpoints;
                o.Slots = 4;
                o.MaxQueue = 8;
                o.MaxPromptTokens = 48;
                o.MaxNewTokens = 40;
                o.Precision = "fp32";
            });
        }
    }
}

[CollectionDefinition(nameof(ClusterCollection))]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>;
