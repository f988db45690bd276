using System.Runtime.CompilerServices;
using Orleans.Runtime;

namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// A stream that broke because the silo serving it was lost (killed, partitioned, shutting down), after
/// <see cref="TokensDelivered"/> pieces had reached the caller. Nothing was wrong with the request: sending it again
/// (with the same seed, for the same text) is the remedy, which is why this is not retried silently, since the
/// caller has already shown part of the answer.
/// </summary>
[GenerateSerializer]
public sealed class GenerationInterruptedException : Exception
{
    public GenerationInterruptedException(string message, int tokensDelivered, Exception? inner = null) : base(message, inner) =>
        TokensDelivered = tokensDelivered;

    /// <summary>Pieces the caller received before the break.</summary>
    [Id(0)]
    public int TokensDelivered { get; }

    /// <summary>Always true: the same request may be sent again.</summary>
    public bool Retriable => true;
}

/// <summary>
/// How callers survive a silo's death: a stream that fails before its first item is started again (on another
/// replica, for generation); one that fails later ends with <see cref="GenerationInterruptedException"/>.
/// </summary>
public static class ResilientStreams
{
    /// <summary>Attempts per request: the first, and two more on other replicas.</summary>
    public const int Attempts = 3;

    /// <summary>
    /// How long a started stream may go without its next item before it counts as lost. Items of a running stream
    /// come every decode step (milliseconds); a read already on its way to a silo that died is otherwise only
    /// answered by Orleans' response timeout (30 s by default), because a client does not watch the deaths of
    /// silos that are not its gateways.
    /// </summary>
    public static readonly TimeSpan StallTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How often a request still waiting for its first item (queued behind others) asks whether its replica
    /// is still listed: once membership drops a dead silo, its queued requests move without waiting for Orleans'
    /// response timeout.</summary>
    public static readonly TimeSpan QueuedCheckEvery = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Whether <paramref name="e"/> means "the silo serving this was lost", as opposed to a problem with the request
    /// (bad settings, busy), which no retry fixes.
    /// </summary>
    public static bool IsLostSilo(Exception e) => e is SiloUnavailableException or OrleansMessageRejectionException
        or Orleans.Runtime.Messaging.ConnectionFailedException or EnumerationAbortedException or DeviceNotFoundException
        or TimeoutException or ObjectDisposedException
        || (e is OrleansException && e.Message.Contains("silo", StringComparison.OrdinalIgnoreCase) && e.Message.Contains("dead", StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Streams <paramref name="request"/> from the least-loaded replica of <paramref name="size"/>. A replica that is
    /// lost before its first piece is left out and the request goes to another (at most <see cref="Attempts"/> tries,
    /// with a short back-off while membership catches up); one lost later ends the stream with
    /// <see cref="GenerationInterruptedException"/>. A size no silo serves fails with ArgumentException.
    /// </summary>
    public static IAsyncEnumerable<GeneratedChunk> GenerateAsync(this IGrainFactory grains, string size, GenerationRequest request,
        CancellationToken cancellationToken = default)
    {
        var router = grains.GetGrain<IModelRouterGrain>(0);
        return grains.FromReplicasAsync(async lost =>
        {
            string key = await router.PickReplicaAsync(size, lost, cancellationToken)
                ?? throw new ArgumentException($"No silo serves '{size}'" + (lost.Count > 0 ? $" (lost: {string.Join(", ", lost)})" : ""), nameof(size));
            return (key, request);
        }, cancellationToken);
    }

    /// <summary>
    /// Streams from the model grain <paramref name="pick"/> chooses, telling it the replicas this request has lost so
    /// far so that it chooses another: what <see cref="GenerateAsync"/> and abstract writing share. See
    /// <see cref="UntilFirstItemAsync"/> for when a replica counts as lost.
    /// </summary>
    public static IAsyncEnumerable<GeneratedChunk> FromReplicasAsync(this IGrainFactory grains,
        Func<IReadOnlyList<string>, Task<(string Key, GenerationRequest Request)>> pick, CancellationToken cancellationToken = default)
    {
        var lost = new List<string>();
        string current = "";
        var router = grains.GetGrain<IModelRouterGrain>(0);
        return UntilFirstItemAsync(async () =>
        {
            (current, var request) = await pick(lost);
            return grains.GetGrain<IModelGrain>(current).GenerateAsync(request, cancellationToken);
        }, _ => lost.Add(current), () => current,
        async ct => (await router.GetReplicasAsync(ct)).Any(r => r.Key == current), cancellationToken);
    }

    /// <summary>
    /// Starts the stream <paramref name="start"/> returns and relays it; if it fails with <see cref="IsLostSilo"/>
    /// before its first item, <paramref name="onLost"/> is told and it is started again (at most
    /// <see cref="Attempts"/> times). While the first item is awaited, <paramref name="stillServing"/> is asked every
    /// <see cref="QueuedCheckEvery"/>; false counts as a lost silo. A loss after the first item throws
    /// <see cref="GenerationInterruptedException"/> naming <paramref name="describe"/>'s source.
    /// </summary>
    public static async IAsyncEnumerable<T> UntilFirstItemAsync<T>(Func<Task<IAsyncEnumerable<T>>> start, Action<Exception>? onLost = null,
        Func<string>? describe = null, Func<CancellationToken, Task<bool>>? stillServing = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        for (int attempt = 1; ; attempt++)
        {
            IAsyncEnumerator<T>? items = null;
            bool first;
            try
            {
                items = (await start()).GetAsyncEnumerator(cancellationToken);
                first = await FirstAsync(items, stillServing, describe, cancellationToken);
            }
            catch (Exception e) when (IsLostSilo(e) && attempt < Attempts && !cancellationToken.IsCancellationRequested)
            {
                if (items is not null)
                    await DisposeQuietlyAsync(items);
                onLost?.Invoke(e);
                await Task.Delay(TimeSpan.FromMilliseconds(250 * attempt), cancellationToken);
                continue;
            }
            catch when (items is not null)
            {
                // The caller left (or the stream failed) before the first item: the grain side must hear of it now, or
                // the request keeps its queue place, then a batch slot, until it would have ended by itself.
                await DisposeQuietlyAsync(items);
                throw;
            }
            int delivered = 0;
            try
            {
                for (bool more = first; more; more = await NextAsync(items, delivered, describe))
                {
                    delivered++;
                    yield return items.Current;
                }
            }
            finally
            {
                await DisposeQuietlyAsync(items);
            }
            yield break;
        }
    }

    /// <summary>The first MoveNext, given up (as a lost silo) when <paramref name="stillServing"/> says the replica is gone.</summary>
    private static async Task<bool> FirstAsync<T>(IAsyncEnumerator<T> items, Func<CancellationToken, Task<bool>>? stillServing, Func<string>? describe,
        CancellationToken cancellationToken)
    {
        var first = items.MoveNextAsync().AsTask();
        if (stillServing is null)
            return await first;
        while (await Task.WhenAny(first, Task.Delay(QueuedCheckEvery, cancellationToken)) != first) // a cancelled delay ends the wait too
        {
            if (cancellationToken.IsCancellationRequested)
            {
                // Left while queued: the read under way ends with the cancellation the grain was sent; let it settle
                // (briefly) so that the enumerator can be disposed, which is what gives the queue place back.
                await ((Task)first).WaitAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                cancellationToken.ThrowIfCancellationRequested();
            }
            if (!await stillServing(cancellationToken))
            {
                // The abandoned read ends with Orleans' response timeout; nothing waits for it.
                _ = first.ContinueWith(t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
                throw new SiloUnavailableException($"{describe?.Invoke() ?? "The replica"} is no longer listed by the cluster: its silo left or died");
            }
        }
        return await first;
    }

    private static async ValueTask<bool> NextAsync<T>(IAsyncEnumerator<T> items, int delivered, Func<string>? describe)
    {
        try
        {
            return await items.MoveNextAsync().AsTask().WaitAsync(StallTimeout);
        }
        catch (Exception e) when (IsLostSilo(e))
        {
            throw new GenerationInterruptedException($"The replica writing this request ({describe?.Invoke() ?? "its silo"}) was lost after {delivered} " +
                $"piece(s): {e.GetType().Name}: {e.Message.Split('\n')[0]}. Nothing is wrong with the request; send it again (the same seed gives the same text).", delivered, e);
        }
    }

    private static async ValueTask DisposeQuietlyAsync<T>(IAsyncEnumerator<T> items)
    {
        try
        {
            // Bounded: telling a lost silo that the stream is abandoned cannot succeed, and need not be waited for.
            await items.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(1));
        }
        catch (Exception e) when (IsLostSilo(e) || e is NotSupportedException or InvalidOperationException)
        {
            // A proxy whose read was abandoned may refuse to dispose; the silo side ends it on its own.
        }
    }
}
