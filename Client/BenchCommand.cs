using System.Diagnostics;
using System.Globalization;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Client;

/// <summary>
/// Load against a running cluster through the model grains: for each concurrency, that many workers send requests
/// back to back, each to the replica the router picks (the least loaded); prints aggregate tokens/s and requests/s, time to first token and inter-token latency
/// (p50/p99), and failures.
/// </summary>
public static class BenchCommand
{
    public static async Task<int> RunAsync(ClusterConnection connection, int[] concurrencies, int requests, int maxTokens, int promptTokens, string model, TextWriter output)
    {
        var router = connection.Cluster.GetGrain<IModelRouterGrain>(0);
        var replicas = (await router.GetReplicasAsync()).Where(r => r.Size == model).ToList();
        if (replicas.Count == 0)
            throw new ArgumentException($"No silo serves '{model}'");
        var info = await connection.Cluster.GetGrain<IModelGrain>(replicas[0].Key).GetInfoAsync();
        output.WriteLine($"{model}: {replicas.Count} replica(s) ({string.Join(", ", replicas.Select(r => r.Key))}); {info.Parameters:N0} parameters ({info.Provenance}); " +
            $"{promptTokens}-token prompts, {maxTokens} new tokens, top-p 0.9");
        output.WriteLine("| concurrency | requests | tok/s | req/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | failures |");
        output.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (int concurrency in concurrencies)
        {
            var ttft = new List<double>();
            var itl = new List<double>();
            long tokens = 0;
            int failures = 0, next = 0;
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async worker =>
            {
                while (Interlocked.Increment(ref next) <= requests)
                {
                    var random = new Random(next);
                    int[] prompt = [.. Enumerable.Range(0, promptTokens).Select(_ => random.Next(50000))];
                    var sampling = new SamplingOptions(TopP: 0.9, MaxTokens: maxTokens, Seed: next);
                    var sw = Stopwatch.StartNew();
                    double last = 0;
                    bool first = true;
                    try
                    {
                        string key = await router.PickReplicaAsync(model) ?? throw new ArgumentException($"No silo serves '{model}'");
                        await foreach (var chunk in connection.Cluster.GetGrain<IModelGrain>(key).GenerateAsync(new GenerationRequest(prompt, sampling)))
                        {
                            double now = sw.Elapsed.TotalMilliseconds;
                            lock (ttft) (first ? ttft : itl).Add(first ? now : now - last);
                            first = false;
                            last = now;
                            Interlocked.Add(ref tokens, chunk.Tokens.Length);
                        }
                    }
                    catch (Exception e) when (e is ModelBusyException or TimeoutException or ArgumentException)
                    {
                        Interlocked.Increment(ref failures);
                    }
                }
            }));
            double seconds = clock.Elapsed.TotalSeconds;
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {concurrency} | {requests} | {tokens / seconds:F1} | {(requests - failures) / seconds:F2} | {Percentile(ttft, 0.5):F0} | {Percentile(ttft, 0.99):F0} | {Percentile(itl, 0.5):F0} | {Percentile(itl, 0.99):F0} | {failures} |"));
        }
        return 0;
    }

    private static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        values.Sort();
        return values[Math.Min(values.Count - 1, (int)Math.Ceiling(p * values.Count) - 1)];
    }
}
