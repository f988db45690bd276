using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Orleans.Runtime;
using OrleansGpt.Grains.Interfaces;
using Xunit.Abstractions;

namespace OrleansGpt.Tests.Cluster;

[CollectionDefinition(nameof(ProcessClusterCollection))]
public sealed class ProcessClusterCollection : ICollectionFixture<ProcessCluster>;

/// <summary>
/// Faults on a real three-silo cluster over Redis (<see cref="ProcessCluster"/>): a silo killed with -9 under load,
/// the whole cluster stopped and started, promotions under load. Each test leaves all three silos running.
/// </summary>
[Collection(nameof(ProcessClusterCollection))]
public sealed class ClusterFaultTests(ProcessCluster cluster, ITestOutputHelper output)
{
    /// <summary>How long the cluster may take to stop routing to a killed silo: 2 missed 1-second probes, the
    /// votes, and the table refresh, with room for a loaded CI machine.</summary>
    private static readonly TimeSpan s_reserveBound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task KillingASiloMidStreamLosesNoSessionAndOnlyItsOwnStreams()
    {
        var grains = cluster.Client;
        // Sessions with their own settings and one abstract each, until at least two are active on silo c.
        var sessions = new Dictionary<string, (SessionSettings Settings, IReadOnlyList<HistoryEntry> History)>();
        for (int i = 0; i < 24 && (sessions.Count < 6 || (await SessionsOnAsync("c", sessions.Keys)).Count < 2); i++)
        {
            string id = $"user-{i}";
            var session = grains.GetGrain<ISessionGrain>(id);
            var settings = await session.UpdateSettingsAsync(new SessionSettings(i % 2 == 0 ? "CV" : "AI", "tiny", new SamplingOptions(TopP: 0.8, MaxTokens: 8, Seed: i)));
            await TestModels.CollectAsync(session.WriteAbstractAsync($"Title {i}"));
            sessions[id] = (settings, await session.GetHistoryAsync());
        }
        var onC = await SessionsOnAsync("c", sessions.Keys);
        Assert.True(onC.Count >= 2, "no session was activated on silo c");

        // 16 long streams, spread by the router over the three replicas (2 slots each, so most wait in a queue).
        var streams = Enumerable.Range(0, 16).Select(i => new Stream(grains.GenerateAsync("tiny",
            new GenerationRequest([464, 3290, 286], new SamplingOptions(MaxTokens: 300, Seed: 100 + i))))).ToList();
        foreach (var stream in streams)
        {
            stream.Begin();
            await Task.Delay(50); // the router sees each request's load before placing the next
        }
        // Kill c once it has streams running (a first token out) and the rest are queued.
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!streams.Any(s => s.Replica?.StartsWith("tiny@c/", StringComparison.Ordinal) == true) && DateTime.UtcNow < deadline)
            await Task.Delay(50);
        var killedAt = Stopwatch.StartNew();
        cluster.Silo("c").Kill();
        var atKill = streams.Select(s => (s.Replica, s.Delivered)).ToList();
        // The size is served by the surviving replicas alone once membership declares c dead, within the bound.
        var dropped = cluster.WaitForReplicasAsync(2, s_reserveBound).ContinueWith(_ => killedAt.Elapsed, TaskScheduler.Default);

        await Task.WhenAll(streams.Select(s => s.FinishAsync()));
        var outcomes = streams.Zip(atKill, (s, k) => (Stream: s, ReplicaAtKill: k.Replica, DeliveredAtKill: k.Delivered)).ToList();
        foreach (var (s, replica, delivered) in outcomes)
            output.WriteLine($"{replica ?? "(queued)"} {delivered} at kill -> {s.Replica}: {(s.Error is null ? $"{s.Delivered} tokens" : s.Error.GetType().Name)}");

        // Streams of c that had delivered a token end with the clear, retriable error, and nothing else does.
        var cutOff = outcomes.Where(o => o.ReplicaAtKill?.StartsWith("tiny@c/", StringComparison.Ordinal) == true).ToList();
        Assert.NotEmpty(cutOff);
        Assert.All(cutOff, o => Assert.True(o.Stream.Error is GenerationInterruptedException { Retriable: true }, o.Stream.Error?.ToString() ?? "completed"));
        // Streams on a and b are untouched: all 300 tokens from the replica they started on.
        var elsewhere = outcomes.Where(o => o.ReplicaAtKill is { } r && !r.StartsWith("tiny@c/", StringComparison.Ordinal)).ToList();
        Assert.All(elsewhere, o => Assert.Equal((o.ReplicaAtKill, (Exception?)null, true), (o.Stream.Replica, o.Stream.Error, o.Stream.Finish is "length" or "stop")));
        // Requests that had produced nothing yet complete, on a or b.
        var waiting = outcomes.Where(o => o.ReplicaAtKill is null).ToList();
        Assert.All(waiting, o => Assert.True(o.Stream.Error is null && o.Stream.Finish is "length" or "stop" && !o.Stream.Replica!.StartsWith("tiny@c/", StringComparison.Ordinal),
            $"{o.Stream.Replica}: {o.Stream.Error}"));

        output.WriteLine($"router dropped c {(await dropped).TotalSeconds:F1} s after the kill");
        Assert.NotEmpty(await TestModels.CollectAsync(grains.GenerateAsync("tiny", new GenerationRequest([464], new SamplingOptions(MaxTokens: 4)))));

        // Every session, those that lived on c included, has its settings and history.
        foreach (var (id, (settings, history)) in sessions)
        {
            var session = grains.GetGrain<ISessionGrain>(id);
            Assert.Equal(settings, await session.GetSettingsAsync());
            Assert.Equal(history, await session.GetHistoryAsync());
        }
        // ... and over HTTP, on a surviving silo.
        var read = await cluster.Silo("a").GetAsync<JsonElement>($"/v1/sessions/{onC[0]}");
        Assert.Equal(sessions[onC[0]].History[0].Abstract, read.GetProperty("history")[0].GetProperty("abstract").GetString());

        // c restarts, rejoins and gets its replica back.
        var restart = Stopwatch.StartNew();
        cluster.Silo("c").Start();
        await cluster.Silo("c").WaitHealthyAsync(TimeSpan.FromMinutes(2));
        await cluster.WaitForReplicasAsync(3, TimeSpan.FromSeconds(60));
        var info = await grains.GetGrain<IModelGrain>("tiny@c/cpu:0").GetInfoAsync();
        Assert.Equal(await grains.GetGrain<ICheckpointRegistryGrain>("tiny").GetActiveAsync(), info.Version);
        Assert.NotEmpty(await TestModels.CollectAsync(grains.GetGrain<IModelGrain>("tiny@c/cpu:0").GenerateAsync(new GenerationRequest([464], new SamplingOptions(MaxTokens: 4)))));
        output.WriteLine($"c served again {restart.Elapsed.TotalSeconds:F1} s after its restart began");
    }

    [Fact]
    public async Task ARollingPromoteUnderLoadFailsNoRequestAndEachAnswerHasOneVersion()
    {
        var grains = cluster.Client;
        var registry = grains.GetGrain<ICheckpointRegistryGrain>("tiny");
        string before = (await registry.GetActiveAsync())!;
        using var temp = TestModels.TempDir();
        using (var model = TestModels.Random(ProcessCluster.ModelConfig, seed: 12))
            OrleansGpt.Training.Model.Gpt2Checkpoint.Save(model, temp.Path, new OrleansGpt.Training.Model.ModelProvenance("untrained", "promoted under load"));
        var next = cluster.Store.Publish("tiny", temp.Path);
        await registry.RegisterAsync(OrleansGpt.Grains.CheckpointRegistryGrain.From(next));

        // 32 streams over the three silos' replicas; the promotion starts once every replica is decoding.
        var streams = Enumerable.Range(0, 32).Select(i => new Stream(grains.GenerateAsync("tiny",
            new GenerationRequest([464, 3290, 286], new SamplingOptions(MaxTokens: 150, Seed: 500 + i))))).ToList();
        foreach (var stream in streams)
            stream.Begin();
        for (var deadline = DateTime.UtcNow.AddSeconds(60); streams.Select(s => s.Replica).Distinct().Count(r => r is not null) < 3 && DateTime.UtcNow < deadline;)
            await Task.Delay(50);
        var clock = Stopwatch.StartNew();
        var promotion = await registry.PromoteAsync(next.Version);
        var promotedAt = clock.Elapsed;
        var late = new Stream(grains.GenerateAsync("tiny", new GenerationRequest([464], new SamplingOptions(MaxTokens: 20, Seed: 1))));
        late.Begin();
        await Task.WhenAll(streams.Append(late).Select(s => s.FinishAsync()));

        Assert.Equal(3, promotion.Replicas.Count);
        Assert.All(streams, s => Assert.True(s.Error is null && s.Finish is "length" or "stop", s.Error?.ToString()));
        // Each answer is written by one version from its first token to its last.
        Assert.All(streams, s => Assert.Single(s.Versions));
        Assert.Contains(streams, s => s.Versions.Single() == before);
        Assert.Equal([next.Version], late.Versions);
        foreach (var replica in promotion.Replicas)
            Assert.Equal(next.Version, (await grains.GetGrain<IModelGrain>(replica).GetInfoAsync()).Version);
        output.WriteLine($"promotion took {promotedAt.TotalSeconds:F2} s (loading {promotion.LoadSeconds:F2} s); " +
            $"{streams.Count(s => s.Versions.Single() == before)} of 32 answers finished on the old version; longest gap between two pieces of one stream: " +
            $"{streams.Max(s => s.LongestGap).TotalMilliseconds:F0} ms, median of the streams' longest gaps {streams.Select(s => s.LongestGap.TotalMilliseconds).Order().ElementAt(16):F0} ms");
    }

    [Fact]
    public async Task TheWholeClusterStopsAndStartsWithSessionsFineTunesAndTheActiveVersion()
    {
        var grains = cluster.Client;
        using var temp = TestModels.TempDir();
        string data = TestData.Prepared(temp.Path, papers: 200, words: 60);
        // A fine-tune through silo a's operator API: two steps, published and promoted on every replica.
        var started = await cluster.Silo("a").Http.PostAsJsonAsync("/v1/fine-tunes",
            new { model = "tiny", data_directory = data, max_steps = 2, block_size = 32, batch_size = 2, learning_rate = 1e-3 });
        Assert.Equal(HttpStatusCode.Accepted, started.StatusCode);
        JsonElement status;
        for (var deadline = DateTime.UtcNow.AddMinutes(3); (status = await cluster.Silo("b").GetAsync<JsonElement>("/v1/fine-tunes/tiny")).GetProperty("state").GetString() == "running";)
        {
            Assert.True(DateTime.UtcNow < deadline, "the fine-tune did not finish in 3 minutes");
            await Task.Delay(250);
        }
        Assert.True(status.GetProperty("state").GetString() == "succeeded", status.ToString());
        string tuned = status.GetProperty("version").GetString()!;
        var session = grains.GetGrain<ISessionGrain>("restart-user");
        var settings = await session.UpdateSettingsAsync(new SessionSettings("LG", "tiny", new SamplingOptions(TopK: 40, MaxTokens: 6, Seed: 3)));
        await TestModels.CollectAsync(session.WriteAbstractAsync("Surviving Restarts"));
        var history = await session.GetHistoryAsync();
        Assert.Equal(tuned, history[^1].Version);

        // Every silo stops; Redis and the checkpoint store stay.
        await Task.WhenAll(cluster.Silos.Select(s => s.StopAsync()));
        foreach (var silo in cluster.Silos)
            silo.Start();
        await Task.WhenAll(cluster.Silos.Select(s => s.WaitHealthyAsync(TimeSpan.FromMinutes(2))));
        await cluster.ConnectAsync();
        grains = cluster.Client;

        Assert.Equal(tuned, await grains.GetGrain<ICheckpointRegistryGrain>("tiny").GetActiveAsync());
        foreach (var replica in await cluster.WaitForReplicasAsync(3, TimeSpan.FromSeconds(30)))
            Assert.Equal(tuned, (await grains.GetGrain<IModelGrain>(replica.Key).GetInfoAsync()).Version);
        session = grains.GetGrain<ISessionGrain>("restart-user");
        Assert.Equal(settings, await session.GetSettingsAsync());
        Assert.Equal(history, await session.GetHistoryAsync());
        var runs = await cluster.Silo("c").Http.GetAsync("/v1/fine-tunes/tiny/history");
        var last = (await runs.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("data").EnumerateArray().Last();
        Assert.Equal(("succeeded", tuned), (last.GetProperty("state").GetString(), last.GetProperty("version").GetString()));
        var versions = await grains.GetGrain<ICheckpointRegistryGrain>("tiny").GetVersionsAsync();
        Assert.Equal(versions.Single(v => v.Active).Parent, versions.Single(v => v.Version == versions.Single(x => x.Active).Parent).Version);
    }

    [Fact]
    public async Task AFineTuneWhoseSiloDiesSaysSoAndResumesOnAnotherTrainingSilo()
    {
        using var temp = TestModels.TempDir();
        string data = TestData.Prepared(temp.Path, papers: 200, words: 60);
        // Started through b's API, so the training grain is placed on b (a training silo, and the caller).
        var b = cluster.Silo("b");
        var started = await b.Http.PostAsJsonAsync("/v1/fine-tunes",
            new { model = "tiny", data_directory = data, max_steps = 40, checkpoint_every = 4, block_size = 32, batch_size = 2, learning_rate = 1e-3 });
        Assert.Equal(HttpStatusCode.Accepted, started.StatusCode);
        Assert.Equal("b/cpu:0", (await started.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("node").GetString());
        JsonElement status;
        for (var deadline = DateTime.UtcNow.AddMinutes(2); (status = await b.GetAsync<JsonElement>("/v1/fine-tunes/tiny")).GetProperty("step").GetInt64() < 9;)
        {
            Assert.True(DateTime.UtcNow < deadline && status.GetProperty("state").GetString() == "running", status.ToString());
            await Task.Delay(100);
        }
        b.Kill();

        // Asked on a, once membership has declared b dead: the persisted run reports the silo's death.
        var a = cluster.Silo("a");
        for (var deadline = DateTime.UtcNow.AddSeconds(60); ; await Task.Delay(250))
        {
            using var response = await a.Http.GetAsync("/v1/fine-tunes/tiny");
            if (response.IsSuccessStatusCode && (status = await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("state").GetString() == "interrupted")
                break;
            Assert.True(DateTime.UtcNow < deadline, $"no interrupted status on a after 60 s: {await response.Content.ReadAsStringAsync()}");
        }
        string message = status.GetProperty("message").GetString()!;
        Assert.Contains("interrupted: the silo running it (b/cpu:0) stopped", message);
        int saved = int.Parse(System.Text.RegularExpressions.Regex.Match(message, "last checkpoint is at step ([0-9]+)").Groups[1].Value);
        Assert.True(saved >= 8 && saved % 4 == 0, message);

        // Resumed on a, it finishes the 40 steps from its last checkpoint and publishes.
        var resumed = await a.Http.PostAsJsonAsync("/v1/fine-tunes/tiny/resume", new { });
        Assert.Equal(HttpStatusCode.Accepted, resumed.StatusCode);
        Assert.Equal("a/cpu:0", (await resumed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("node").GetString());
        for (var deadline = DateTime.UtcNow.AddMinutes(3); (status = await a.GetAsync<JsonElement>("/v1/fine-tunes/tiny")).GetProperty("state").GetString() == "running";)
        {
            Assert.True(DateTime.UtcNow < deadline, "the resumed fine-tune did not finish in 3 minutes");
            await Task.Delay(250);
        }
        Assert.True(status.GetProperty("state").GetString() == "succeeded", status.ToString());
        Assert.Equal(40, status.GetProperty("step").GetInt64());
        var log = await File.ReadAllTextAsync(Path.Combine(status.GetProperty("run_directory").GetString()!, "train.log"));
        Assert.Contains($"resuming at step {saved}", log);
        var history = (await a.GetAsync<JsonElement>("/v1/fine-tunes/tiny/history")).GetProperty("data").EnumerateArray().Select(h => h.GetProperty("state").GetString()).ToList();
        Assert.Equal(["interrupted", "succeeded"], history.TakeLast(2));

        b.Start();
        await b.WaitHealthyAsync(TimeSpan.FromMinutes(2));
        await cluster.WaitForReplicasAsync(3, TimeSpan.FromSeconds(60));
    }

    [Fact]
    public async Task OperatorsSeeTheClusterAndItsVersionsWithTheKeyAndOnlyWithIt()
    {
        var silo = new Uri($"http://127.0.0.1:{cluster.Silo("a").HttpPort}");
        using (var anonymous = new HttpClient { BaseAddress = silo })
        {
            var refused = await anonymous.GetAsync("/v1/cluster");
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            Assert.Contains("operator key", await refused.Content.ReadAsStringAsync());
            Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsJsonAsync("/v1/models/tiny/rollback", new { })).StatusCode);
            // What users call stays open.
            Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/v1/models")).StatusCode);
        }

        var printed = new StringWriter();
        using (var ops = new OrleansGpt.Client.OpsCommand(silo, ProcessCluster.OperatorKey, printed))
        {
            Assert.Equal(0, await ops.StatusAsync());
            Assert.Equal(0, await ops.VersionsAsync("tiny"));
        }
        string text = printed.ToString();
        output.WriteLine(text);
        foreach (var node in new[] { "a", "b", "c" })
            Assert.Contains($"| tiny@{node}/cpu:0 | {await cluster.Client.GetGrain<ICheckpointRegistryGrain>("tiny").GetActiveAsync()} |", text);
        Assert.Contains($"* {await cluster.Client.GetGrain<ICheckpointRegistryGrain>("tiny").GetActiveAsync()}", text);

        var wrong = new StringWriter();
        using (var ops = new OrleansGpt.Client.OpsCommand(silo, "not-the-key", wrong))
            Assert.Equal(1, await ops.StatusAsync());
        Assert.Contains("error: Operator endpoints need the operator key", wrong.ToString());
    }

    /// <summary>Which of <paramref name="ids"/> have their session grain activated on the silo of <paramref name="node"/>.</summary>
    private async Task<List<string>> SessionsOnAsync(string node, IEnumerable<string> ids)
    {
        var silo = cluster.Silo(node);
        var stats = await cluster.Client.GetGrain<IManagementGrain>(0).GetDetailedGrainStatistics(null, null);
        return [.. ids.Where(id => stats.Any(s => s.GrainId.Key.ToString() == id && s.SiloAddress.Endpoint.Port == silo.SiloPort))];
    }

    /// <summary>One streamed request, read as it arrives.</summary>
    private sealed class Stream(IAsyncEnumerable<GeneratedChunk> chunks)
    {
        private Task? _reading;

        public string? Replica { get; private set; }
        public int Delivered { get; private set; }
        public string? Finish { get; private set; }
        public Exception? Error { get; private set; }

        /// <summary>The versions that wrote this stream's pieces.</summary>
        public HashSet<string> Versions { get; } = [];

        /// <summary>The longest wait between two pieces.</summary>
        public TimeSpan LongestGap { get; private set; }

        public void Begin() => _reading = ReadAsync();

        public Task FinishAsync() => _reading!;

        private async Task ReadAsync()
        {
            try
            {
                var last = Stopwatch.StartNew();
                await foreach (var chunk in chunks)
                {
                    if (Delivered > 0 && last.Elapsed > LongestGap)
                        LongestGap = last.Elapsed;
                    last.Restart();
                    Versions.Add(chunk.Version);
                    Replica = chunk.Replica;
                    Delivered += chunk.Tokens.Length;
                    Finish = chunk.FinishReason ?? Finish;
                }
            }
            catch (Exception e)
            {
                Error = e;
            }
        }
    }
}
