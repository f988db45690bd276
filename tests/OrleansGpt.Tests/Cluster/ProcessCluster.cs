using OrleansGpt.Client;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Cluster;

/// <summary>
/// A real cluster on this machine: a private Redis, three silo processes (nodes a, b, c) that share a checkpoint
/// store directory and each serve a "tiny" replica on cpu:0, and the Client project's cluster connection, which
/// finds the gateways in Redis. Nodes a and b may fine-tune. Membership is tuned to notice a dead silo in seconds
/// (see <see cref="Membership"/>). Everything it starts is stopped, and its directories deleted, on dispose.
/// </summary>
public sealed class ProcessCluster : IAsyncLifetime
{
    /// <summary>Failure detection for tests: probes every second, a silo missing 2 is suspected, and the other two
    /// silos' votes declare it dead. deploy/README.md gives the production values.</summary>
    public static readonly IReadOnlyDictionary<string, string> Membership = new Dictionary<string, string>
    {
        ["Cluster:Membership:ProbeTimeout"] = "00:00:01",
        ["Cluster:Membership:NumMissedProbesLimit"] = "2",
        ["Cluster:Membership:NumVotesForDeathDeclaration"] = "2",
        ["Cluster:Membership:TableRefreshTimeout"] = "00:00:02",
        ["Cluster:Membership:IAmAliveTablePublishTimeout"] = "00:00:05",
        ["Cluster:Membership:DeathVoteExpirationTimeout"] = "00:00:30",
    };

    /// <summary>The silos' Operator:ApiKey; their Http clients send it.</summary>
    public const string OperatorKey = "test-operator-key";

    private readonly TestModels.TempDirectory _directory = TestModels.TempDir();
    private readonly string _clusterId = "test-" + Guid.NewGuid().ToString("N")[..8];
    private ClusterConnection? _connection;

    public RedisServer Redis { get; private set; } = null!;

    public IReadOnlyList<SiloProcess> Silos { get; private set; } = [];

    /// <summary>The shared checkpoint store (what an NFS mount would be across machines).</summary>
    public CheckpointStore Store { get; private set; } = null!;

    /// <summary>The version of "tiny" the cluster started with.</summary>
    public string FirstVersion { get; private set; } = "";

    public IClusterClient Client => _connection!.Cluster;

    public SiloProcess Silo(string node) => Silos.Single(s => s.Node == node);

    /// <summary>The model: small enough to load in a second, slow enough (4 layers, 256 wide, GPT-2's vocabulary)
    /// that a 300-token request takes seconds on this CPU, so a silo can be killed while streams run.</summary>
    public static GptConfig ModelConfig { get; } = TestModels.TinyGpt2Vocabulary with { BlockSize = 512, Layers = 4, Heads = 4, Embedding = 256 };

    public async Task InitializeAsync()
    {
        Redis = await RedisServer.StartAsync();
        Store = new CheckpointStore(_directory.Sub("store"));
        using (var model = TestModels.Random(ModelConfig, seed: 11))
            Gpt2Checkpoint.Save(model, _directory.Sub("seed/tiny"), new ModelProvenance("untrained", "process cluster tiny"));
        FirstVersion = Store.Publish("tiny", _directory.Sub("seed/tiny")).Version;

        Silos = [.. new[] { "a", "b", "c" }.Select(node => new SiloProcess(node, Settings(node), _directory.Path))];
        foreach (var silo in Silos)
            silo.Start();
        await Task.WhenAll(Silos.Select(s => s.WaitHealthyAsync(TimeSpan.FromMinutes(2))));
        await ConnectAsync();
    }

    /// <summary>(Re)connects the test's client once every silo is up, and waits for the three replicas.</summary>
    public async Task ConnectAsync()
    {
        if (_connection is not null)
            await _connection.DisposeAsync();
        // The test's client uses a's and b's gateways: c is the silo the fault tests kill, and a client's calls
        // through a dead gateway break like those to a dead replica (ClusterSettings.Gateways says why).
        var client = ClientSettings();
        client["Cluster:Gateways:0"] = $"127.0.0.1:{Silo("a").GatewayPort}";
        client["Cluster:Gateways:1"] = $"127.0.0.1:{Silo("b").GatewayPort}";
        _connection = await ClusterConnection.ConnectAsync(client);
        await WaitForReplicasAsync(3, TimeSpan.FromSeconds(60));
    }

    /// <summary>What the Client's --redis option and the cluster id amount to.</summary>
    public Dictionary<string, string?> ClientSettings() => new()
    {
        ["Cluster:Provider"] = "redis",
        ["Cluster:Redis"] = Redis.ConnectionString,
        ["Cluster:ClusterId"] = _clusterId,
        ["Cluster:ServiceId"] = _clusterId,
    };

    private Dictionary<string, string> Settings(string node)
    {
        var settings = new Dictionary<string, string>(Membership)
        {
            ["Cluster:Provider"] = "redis",
            ["Cluster:Redis"] = Redis.ConnectionString,
            ["Cluster:ClusterId"] = _clusterId,
            ["Cluster:ServiceId"] = _clusterId,
            ["Cluster:AdvertisedAddress"] = "127.0.0.1",
            ["Operator:ApiKey"] = OperatorKey,
            ["ModelHost:CheckpointDirectory"] = _directory.Sub($"checkpoints-{node}"),
            ["ModelHost:StoreDirectory"] = Store.Root,
            ["ModelHost:CacheDirectory"] = _directory.Sub($"cache-{node}"),
            ["ModelHost:DataDirectory"] = Path.GetTempPath(), // where the tests prepare their data
            ["ModelHost:Precision"] = "fp32",
            ["ModelHost:Slots"] = "2",
            ["ModelHost:MaxQueue"] = "32",
            ["ModelHost:MaxNewTokens"] = "400",
            ["ModelHost:Replicas:0"] = "tiny@cpu:0",
            ["Logging:LogLevel:Default"] = "Warning",
            ["Logging:LogLevel:OrleansGpt"] = "Information",
        };
        Directory.CreateDirectory(settings["ModelHost:CheckpointDirectory"]);
        if (node is "a" or "b")
            settings["ModelHost:TrainingDevices:0"] = "cpu:0";
        return settings;
    }

    /// <summary>Waits until the router lists exactly <paramref name="count"/> tiny replicas; returns them.</summary>
    public async Task<IReadOnlyList<ReplicaInfo>> WaitForReplicasAsync(int count, TimeSpan timeout)
    {
        var router = Client.GetGrain<IModelRouterGrain>(0);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                var replicas = (await router.GetReplicasAsync()).Where(r => r.Size == "tiny").ToList();
                if (replicas.Count == count)
                    return replicas;
                if (DateTime.UtcNow > deadline)
                    throw new TimeoutException($"expected {count} tiny replicas, the router lists {string.Join(", ", replicas.Select(r => r.Key))}\n" +
                        string.Join("\n", Silos.Select(s => $"== {s.Node}\n{s.LogTail(15)}")));
            }
            catch (Exception e) when (ResilientStreams.IsLostSilo(e) && DateTime.UtcNow < deadline)
            {
            }
            await Task.Delay(250);
        }
    }

    public async Task DisposeAsync()
    {
        if (_connection is not null)
        {
            try
            {
                await _connection.DisposeAsync();
            }
            catch (Exception e) when (ResilientStreams.IsLostSilo(e) || e is OperationCanceledException)
            {
            }
        }
        foreach (var silo in Silos)
            await silo.DisposeAsync();
        Redis?.Dispose();
        // KEEP_CLUSTER_LOGS=DIR keeps the silos' logs for a look after the run.
        if (Environment.GetEnvironmentVariable("KEEP_CLUSTER_LOGS") is { } keep)
            foreach (var log in Directory.GetFiles(_directory.Path, "silo-*.log"))
                File.Copy(log, Path.Combine(keep, Path.GetFileName(log)), overwrite: true);
        _directory.Dispose();
    }
}
