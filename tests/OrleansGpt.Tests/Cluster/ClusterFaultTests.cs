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

        public void Begin() => _reading = ReadAsync();

        public Task FinishAsync() => _reading!;

        private async Task ReadAsync()
        {
            try
            {
                await foreach (var chunk in chunks)
                {
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
