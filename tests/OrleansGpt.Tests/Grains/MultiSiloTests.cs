using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Tests.Grains;

/// <summary>
/// Two silos with different device inventories sharing one checkpoint directory: node "a" owns cpu:0 and cpu:1
/// and hosts a "tiny" replica on each; node "b" owns cpu:0 and cuda:0 and hosts one on cpu:0.
/// </summary>
public sealed class MultiSiloFixture : IAsyncLifetime
{
    public ServingCluster Serving { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        // A long block lets a request run for a second or more, long enough to observe it as load.
        var config = TestModels.TinyGpt2Vocabulary with { BlockSize = 1024 };
        Serving = await ServingCluster.StartAsync([("tiny", config, 1, "multi-silo tiny"), ("other", config, 2, "multi-silo other")], (silo, o) =>
        {
            o.Node = silo == 0 ? "a" : "b";
            o.Devices = silo == 0 ? ["cpu:0", "cpu:1"] : ["cpu:0", "cuda:0"];
            o.Replicas = silo == 0 ? ["tiny@cpu:0", "tiny@cpu:1"] : ["tiny@cpu:0"];
            o.Slots = 4;
            o.MaxQueue = 1;
            o.MaxNewTokens = 1000;
        }, silos: 2);
    }

    /// <summary>The router's replica list once both silos' metadata has reached it.</summary>
    public async Task<IReadOnlyList<ReplicaInfo>> ReplicasAsync(int expected)
    {
        var router = Serving.Grains.GetGrain<IModelRouterGrain>(0);
        for (var deadline = DateTime.UtcNow.AddSeconds(20); ; await Task.Delay(100))
        {
            var replicas = await router.GetReplicasAsync();
            if (replicas.Count >= expected || DateTime.UtcNow > deadline)
                return replicas;
        }
    }

    public Task DisposeAsync() => Serving.DisposeAsync().AsTask();
}

public sealed class MultiSiloTests(MultiSiloFixture fixture) : IClassFixture<MultiSiloFixture>
{
    private IGrainFactory Grains => fixture.Serving.Grains;

    [Fact]
    public async Task ModelGrainsLandOnTheSilosThatOwnTheirDevices()
    {
        var replicas = await fixture.ReplicasAsync(3);
        Assert.Equal(["tiny@a/cpu:0", "tiny@a/cpu:1", "tiny@b/cpu:0"], replicas.Select(r => r.Key));
        foreach (var replica in replicas)
        {
            var info = await Grains.GetGrain<IModelGrain>(replica.Key).GetInfoAsync();
            Assert.Equal((replica.Node, replica.Device), (info.Node, info.Device));
            // The engine (the weights and the decode thread) lives in the model host of the owning silo, and only there.
            Assert.Contains(replica.Key, fixture.Serving.Host(replica.Node).Loaded.Select(m => m.Key));
            Assert.DoesNotContain(replica.Key, fixture.Serving.Host(replica.Node == "a" ? "b" : "a").Loaded.Select(m => m.Key));
        }
        // Without a node, the key goes to the one silo that owns the device, and is the same model there.
        Assert.Equal("tiny@a/cpu:1", (await Grains.GetGrain<IModelGrain>("tiny@cpu:1").GetInfoAsync()).Key);
    }

    [Fact]
    public async Task ADeviceServesOneModelAndUnknownDevicesFailClearly()
    {
        await fixture.ReplicasAsync(3);
        await Grains.GetGrain<IModelGrain>("tiny@a/cpu:0").GetInfoAsync();
        var shared = await Assert.ThrowsAsync<InvalidOperationException>(() => Grains.GetGrain<IModelGrain>("other@a/cpu:0").GetInfoAsync().AsTask());
        Assert.Contains("a/cpu:0 already serves tiny@a/cpu:0", shared.Message);

        var nowhere = await Assert.ThrowsAsync<DeviceNotFoundException>(() => Grains.GetGrain<IModelGrain>("tiny@c/cpu:0").GetInfoAsync().AsTask());
        Assert.Contains("a/cpu:0, a/cpu:1, b/cpu:0, b/cuda:0", nowhere.Message);

        // cuda:0 is in b's inventory, so the grain is placed there; this build's libtorch cannot use it, and says so.
        var cuda = await Assert.ThrowsAsync<InvalidOperationException>(() => Grains.GetGrain<IModelGrain>("other@b/cuda:0").GetInfoAsync().AsTask());
        Assert.Contains("no CUDA support", cuda.Message);
        // A model that failed to load does not keep its device: another one may try it.
        var next = await Assert.ThrowsAsync<InvalidOperationException>(() => Grains.GetGrain<IModelGrain>("tiny@b/cuda:0").GetInfoAsync().AsTask());
        Assert.Contains("no CUDA support", next.Message);
    }

    [Fact]
    public async Task FineTuningRunsOnlyWhereATrainingDeviceIsConfigured()
    {
        // Neither silo lists ModelHost:TrainingDevices: the fine-tune is refused, not run on a serving device.
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            Grains.GetGrain<ITrainingGrain>("tiny").StartAsync(new FineTuneRequest("/nowhere")).AsTask());
        Assert.Contains("ModelHost:TrainingDevices", refused.Message);
    }

    [Fact]
    public async Task RequestsGoToTheLeastLoadedReplica()
    {
        var replicas = await fixture.ReplicasAsync(3);
        var router = Grains.GetGrain<IModelRouterGrain>(0);
        var streams = new List<IAsyncEnumerator<GeneratedChunk>>();
        var picked = new List<string>();
        using var cancel = new CancellationTokenSource();
        try
        {
            // Each request is running (its first token is out) before the next is routed, so the next must avoid it.
            for (int i = 0; i < replicas.Count; i++)
            {
                string key = (await router.PickReplicaAsync("tiny"))!;
                picked.Add(key);
                var stream = Grains.GetGrain<IModelGrain>(key)
                    .GenerateAsync(new GenerationRequest([464, 3290], new SamplingOptions(MaxTokens: 1000, Seed: i)), cancel.Token)
                    .GetAsyncEnumerator();
                streams.Add(stream);
                Assert.True(await stream.MoveNextAsync());
            }
            Assert.Equal(replicas.Select(r => r.Key).Order(), picked.Order());
            Assert.Null(await router.PickReplicaAsync("large"));
        }
        finally
        {
            cancel.Cancel();
            foreach (var stream in streams)
                await stream.DisposeAsync();
        }
    }
}
