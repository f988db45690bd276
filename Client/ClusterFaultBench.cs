using System.Diagnostics;
using System.Globalization;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Client;

/// <summary>
/// `bench --cluster-faults`: steady streaming load on one size through the resilient path, while (1) a version is
/// promoted on every replica and (2) a silo is killed with an operator's command and (3) started again. Prints the
/// decode step under load, the longest pause any stream saw during the swap, failed requests in each phase, how long
/// the cluster took to stop routing to the dead silo and to serve from a fresh request again, and how long the
/// restarted silo took to serve.
/// </summary>
public sealed class ClusterFaultBench(IClusterClient cluster, string model, int concurrency, int maxTokens, TextWriter output)
{
    private readonly List<(TimeSpan At, double GapMs)> _gaps = [];
    private readonly List<(TimeSpan Start, TimeSpan End, string Outcome, string Replica)> _requests = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public async Task<int> RunAsync(string? promoteVersion, string? killCommand, string? restartCommand)
    {
        var registry = cluster.GetGrain<ICheckpointRegistryGrain>(model);
        var router = cluster.GetGrain<IModelRouterGrain>(0);
        int replicas = (await router.GetReplicasAsync()).Count(r => r.Size == model);
        if (replicas == 0)
            throw new ArgumentException($"No silo serves '{model}'");
        using var stop = new CancellationTokenSource();
        var load = Task.WhenAll(Enumerable.Range(0, concurrency).Select(w => WorkerAsync(w, stop.Token)));
        output.WriteLine($"{model}: {replicas} replica(s), {concurrency} streams of {maxTokens} tokens, through the resilient client path");

        await Task.Delay(TimeSpan.FromSeconds(10)); // steady state
        var steady = (TimeSpan.Zero, _clock.Elapsed);
        Header();
        Row("steady load", steady);

        if (promoteVersion is not null)
        {
            string? before = await registry.GetActiveAsync();
            var from = _clock.Elapsed;
            var promotion = await registry.PromoteAsync(promoteVersion);
            await Task.Delay(TimeSpan.FromSeconds(2));
            Row($"promote {before} -> {promotion.Version} (load {promotion.LoadSeconds:F1} s)", (from, _clock.Elapsed));
        }

        if (killCommand is not null)
        {
            var from = _clock.Elapsed;
            await ShellAsync(killCommand);
            var killed = _clock.Elapsed;
            TimeSpan? dropped = null, served = null;
            for (var deadline = killed + TimeSpan.FromSeconds(120); _clock.Elapsed < deadline && (dropped is null || served is null); await Task.Delay(100))
            {
                if (dropped is null && await CountAsync(router) < replicas)
                    dropped = _clock.Elapsed - killed;
                lock (_requests)
                    served ??= _requests.Where(r => r.Start > killed && r.Outcome == "ok").Select(r => (TimeSpan?)(r.End - killed)).Min();
            }
            // Every request that was under way at the kill ends before the row is counted. A read already on its way to
            // the dead silo is answered by Orleans' response timeout (30 s unless configured), so this can take a while.
            for (var deadline = killed + TimeSpan.FromSeconds(60); _clock.Elapsed < deadline && !UnderWayAtKillEnded(killed); await Task.Delay(250))
            {
            }
            Row("kill (until every request under way has ended)", (from, _clock.Elapsed));
            output.WriteLine();
            TimeSpan? slowest, completed;
            lock (_requests)
            {
                slowest = _requests.Where(r => r.Start < killed && r.Outcome != "ok").Select(r => (TimeSpan?)(r.End - killed)).Max();
                completed = _requests.Where(r => r.Start < killed && r.End >= killed && r.Outcome == "ok").Select(r => (TimeSpan?)(r.End - killed)).Max();
            }
            output.WriteLine($"after the kill: membership stopped routing to the dead silo in {Seconds(dropped)}; the first request sent after the kill completed " +
                $"{Seconds(served)} after it; the last stream it cut reported its retriable error {Seconds(slowest)} after it; every other request under way " +
                $"(those queued on the dead silo moved to another) had completed {Seconds(completed)} after it");
            if (restartCommand is not null)
            {
                var restarted = _clock.Elapsed;
                await ShellAsync(restartCommand);
                TimeSpan? back = null;
                for (var deadline = restarted + TimeSpan.FromSeconds(180); _clock.Elapsed < deadline && back is null; await Task.Delay(250))
                    if (await CountAsync(router) == replicas)
                        back = _clock.Elapsed - restarted;
                output.WriteLine($"restart: all {replicas} replicas listed again {Seconds(back)} after the restart command");
            }
        }
        await stop.CancelAsync();
        await load;
        output.WriteLine();
        Header();
        Row("whole run", (TimeSpan.Zero, _clock.Elapsed));
        lock (_requests)
            output.WriteLine("requests by replica: " + string.Join(", ", _requests.GroupBy(r => r.Replica).OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => $"{g.Key} {g.Count()} ({g.Count(r => r.Outcome != "ok")} not ok)")));
        return 0;
    }

    private async Task WorkerAsync(int worker, CancellationToken stop)
    {
        for (int i = 0; !stop.IsCancellationRequested; i++)
        {
            var request = new GenerationRequest([464, 3290, 286, 257], new SamplingOptions(TopP: 0.9, MaxTokens: maxTokens, Seed: worker * 100_000 + i));
            var start = _clock.Elapsed;
            var last = TimeSpan.Zero;
            string outcome = "ok", replica = "none";
            try
            {
                await foreach (var chunk in cluster.GenerateAsync(model, request, stop))
                {
                    replica = chunk.Replica;
                    var now = _clock.Elapsed;
                    if (last != TimeSpan.Zero)
                        lock (_gaps) _gaps.Add((now, (now - last).TotalMilliseconds));
                    last = now;
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (GenerationInterruptedException)
            {
                outcome = "interrupted";
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                outcome = "failed";
                await Task.Delay(200, CancellationToken.None); // no hot loop while the cluster has no replica
            }
            lock (_requests) _requests.Add((start, _clock.Elapsed, outcome, replica));
        }
    }

    /// <summary>Whether every request started before <paramref name="killed"/> has ended (the workers record each as it ends,
    /// and each worker has one under way at a time).</summary>
    private bool UnderWayAtKillEnded(TimeSpan killed)
    {
        lock (_requests)
            return _requests.Count(r => r.Start < killed && r.End >= killed) >= concurrency;
    }

    private void Header()
    {
        output.WriteLine("| phase | seconds | requests ended | failed | interrupted | longest pause ms | gap between tokens p50 / p99 ms |");
        output.WriteLine("|---|---:|---:|---:|---:|---:|---|");
    }

    private void Row(string phase, (TimeSpan From, TimeSpan To) w)
    {
        List<(TimeSpan Start, TimeSpan End, string Outcome, string Replica)> ended;
        List<double> gaps;
        lock (_requests) ended = [.. _requests.Where(r => r.End >= w.From && r.End < w.To)];
        lock (_gaps) gaps = [.. _gaps.Where(g => g.At >= w.From && g.At < w.To).Select(g => g.GapMs).Order()];
        string step = gaps.Count == 0 ? "-" : string.Create(CultureInfo.InvariantCulture, $"{gaps[gaps.Count / 2]:F0} / {gaps[Math.Min(gaps.Count - 1, (int)(gaps.Count * 0.99))]:F0}");
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {phase} | {(w.To - w.From).TotalSeconds:F1} | {ended.Count} | {ended.Count(r => r.Outcome == "failed")} | {ended.Count(r => r.Outcome == "interrupted")} | {(gaps.Count == 0 ? 0 : gaps[^1]):F0} | {step} |"));
    }

    private async Task<int> CountAsync(IModelRouterGrain router)
    {
        try
        {
            return (await router.GetReplicasAsync()).Count(r => r.Size == model);
        }
        catch (Exception e) when (ResilientStreams.IsLostSilo(e))
        {
            return -1;
        }
    }

    private static async Task ShellAsync(string command)
    {
        using var process = Process.Start(new ProcessStartInfo("bash", ["-c", command]))!;
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"'{command}' exited with {process.ExitCode}");
    }

    private static string Seconds(TimeSpan? t) => t is { } v ? string.Create(CultureInfo.InvariantCulture, $"{v.TotalSeconds:F1} s") : "(not within the wait)";
}
