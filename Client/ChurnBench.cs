using System.Diagnostics;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Client;

/// <summary>
/// Callers who leave: <c>bench --churn</c>. Each of <c>concurrency</c> workers keeps at most one request alive and
/// sends the next only once the last is over; most requests are abandoned (some while still queued, some after a
/// few tokens), the rest run to the end. With concurrency at most the replica's slots plus its queue, no request can
/// legitimately find the model busy, so every "busy" answer is a false one: the place of a caller who left was not
/// given back in time. The goal is zero.
/// </summary>
public sealed class ChurnBench(IClusterClient cluster, string size, int concurrency, int requests, int maxTokens, TextWriter output)
{
    public async Task<int> RunAsync()
    {
        int completed = 0, leftQueued = 0, leftStreaming = 0, busy = 0, failed = 0;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async worker =>
        {
            var random = new Random(worker);
            for (int i = worker; i < requests; i += concurrency)
            {
                // A third leave before their first token (after 0-50 ms, often still queued), a third after 1-8 tokens,
                // a third stay to the end.
                int kind = random.Next(3);
                int keep = kind == 1 ? random.Next(1, 9) : int.MaxValue;
                using var leave = new CancellationTokenSource();
                if (kind == 0)
                    leave.CancelAfter(random.Next(0, 51));
                var prompt = Enumerable.Range(0, 16).Select(_ => random.Next(100, 50000)).ToArray();
                var request = new GenerationRequest(prompt, new SamplingOptions(TopP: 0.9, MaxTokens: maxTokens, Seed: i));
                int received = 0;
                try
                {
                    await foreach (var _ in cluster.GenerateAsync(size, request, leave.Token))
                        if (++received >= keep)
                            break; // leaving: the enumerator's disposal tells the grain, which frees the slot
                    if (received >= keep) Interlocked.Increment(ref leftStreaming);
                    else Interlocked.Increment(ref completed);
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref received == 0 ? ref leftQueued : ref leftStreaming);
                }
                catch (ModelBusyException)
                {
                    Interlocked.Increment(ref busy);
                }
                catch (Exception e)
                {
                    Interlocked.Increment(ref failed);
                    output.WriteLine($"failed: {e.GetType().Name}: {e.Message}");
                }
            }
        }));
        output.WriteLine($"churn against '{size}': {requests} requests from {concurrency} callers in {clock.Elapsed.TotalSeconds:F1} s: " +
            $"{completed} completed, {leftQueued} left before their first token, {leftStreaming} left mid-stream, {failed} failed");
        output.WriteLine($"false busy (429) answers: {busy}" + (busy == 0 ? "" : " (concurrency was at most slots + queue, so none should be busy)"));
        return busy == 0 && failed == 0 ? 0 : 1;
    }
}
