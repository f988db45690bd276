using Microsoft.Extensions.DependencyInjection;
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
        // GPT-2's vocabulary (the session grain tokenizes titles), otherwise as small as a model gets.
        var config = new GptConfig { VocabSize = Gpt2Tokenizer.VocabSize, BlockSize = 64, Layers = 2, Heads = 2, Embedding = 32, Dropout = 0 };
        using (var model = TestModels.Random(config, seed: 5))
            Gpt2Checkpoint.Save(model, Path.Combine(_directory.Path, "tiny"), new ModelProvenance("untrained", "grain test model"));
        s_checkpoints = _directory.Path;

        var builder = new TestClusterBuilder(1);
        builder.AddSiloBuilderConfigurator<SiloConfigurator>();
        Cluster = builder.Build();
        Cluster.Deploy();
    }

    public TestCluster Cluster { get; }

    public void Dispose()
    {
        Cluster.StopAllSilos();
        Cluster.Dispose();
        _directory.Dispose();
    }

    private sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder silo)
        {
            silo.AddMemoryGrainStorage(SessionGrain.StorageName);
            silo.Services.AddOrleansGptServing();
            silo.Services.Configure<ModelHostOptions>(o =>
            {
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
