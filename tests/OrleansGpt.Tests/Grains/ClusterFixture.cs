namespace OrleansGpt.Tests.Grains;

/// <summary>One in-process silo (node "test") and its HTTP API for the grain tests, serving small random
/// checkpoints with GPT-2's vocabulary (the session grain tokenizes titles).</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    private ServingCluster _serving = null!;

    public IGrainFactory Grains => _serving.Grains;

    /// <summary>The Orleans client (the chat client's connection in tests).</summary>
    public IClusterClient Client => _serving.Cluster.Client;

    /// <summary>A client for the HTTP API.</summary>
    public HttpClient Api => _serving.Api;

    /// <summary>The silo's checkpoint directory (one sub-directory per served size).</summary>
    public string CheckpointDirectory => _serving.CheckpointDirectory;

    public async Task InitializeAsync()
    {
        // "operated" is reloaded by an operator test, "tunable" is fine-tuned by the training grain test and "promoted"
        // changes versions in the promotion tests.
        var config = TestModels.TinyGpt2Vocabulary;
        _serving = await ServingCluster.StartAsync(
            [("tiny", config, 5, "grain test model"), ("operated", config, 6, "before the operator's reload"), ("tunable", config, 7, "before fine-tuning"),
             ("promoted", config, 8, "first weights")],
            (_, o) =>
            {
                o.Node = "test";
                o.ShareDevices = true; // several sizes on the one CPU, as on a developer's machine
                o.Slots = 4;
                o.MaxQueue = 8;
                o.MaxPromptTokens = 48;
                o.MaxNewTokens = 40;
                o.TrainingDevices = ["cpu:0"];
                o.DataDirectory = Path.GetTempPath(); // where the tests prepare their data
            });
    }

    public Task DisposeAsync() => _serving.DisposeAsync().AsTask();
}

[CollectionDefinition(nameof(ClusterCollection))]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>;
