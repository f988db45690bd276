using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Grains;

/// <summary>One in-process silo (node "test") and its HTTP API for the grain tests, serving small random
/// checkpoints with GPT-2's vocabulary (the session grain tokenizes titles).</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    private readonly TestModels.TempDirectory _directory = TestModels.TempDir();
    private ServingCluster _serving = null!;

    public IGrainFactory Grains => _serving.Grains;

    /// <summary>The Orleans client (the chat client's connection in tests).</summary>
    public IClusterClient Client => _serving.Cluster.Client;

    /// <summary>A client for the HTTP API.</summary>
    public HttpClient Api => _serving.Api;

    /// <summary>The silo's checkpoint directory (one sub-directory per served size).</summary>
    public string CheckpointDirectory => _directory.Path;

    public async Task InitializeAsync()
    {
        // The silo serves the sizes present at start: "operated" is reloaded by an operator test and "tunable" is
        // fine-tuned by the training grain test.
        foreach (var (size, seed, description) in new[] { ("tiny", 5L, "grain test model"), ("operated", 6L, "before the operator's reload"), ("tunable", 7L, "before fine-tuning") })
            using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed))
                Gpt2Checkpoint.Save(model, Path.Combine(_directory.Path, size), new ModelProvenance("untrained", description));

        _serving = await ServingCluster.StartAsync(_directory.Path, (_, o) =>
        {
            o.Node = "test";
            o.ShareDevices = true; // several sizes on the one CPU, as on a developer's machine
            o.Slots = 4;
            o.MaxQueue = 8;
            o.MaxPromptTokens = 48;
            o.MaxNewTokens = 40;
        });
    }

    public async Task DisposeAsync()
    {
        await _serving.DisposeAsync();
        _directory.Dispose();
    }
}

[CollectionDefinition(nameof(ClusterCollection))]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>;
