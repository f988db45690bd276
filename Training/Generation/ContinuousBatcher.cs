using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Generation;

/// <summary>Limits of a <see cref="ContinuousBatcher"/>.</summary>
public sealed record BatcherOptions
{
    /// <summary>Requests decoding at once (KV-cache slots).</summary>
    public int Slots { get; init; } = 8;

    /// <summary>Requests waiting for a slot; one more is refused as busy rather than held in memory.</summary>
    public int MaxQueue { get; init; } = 64;

    /// <summary>Longest prompt accepted, in tokens.</summary>
    public int MaxPromptTokens { get; init; } = 256;

    /// <summary>Largest max_tokens accepted.</summary>
    public int MaxNewTokens { get; init; } = 512;

    /// <summary>Prompt tokens prefilled per engine step, so a long prompt delays running streams by one chunk's
    /// forward at a time instead of its whole prefill.</summary>
    public int PrefillChunk { get; init; } = 64;

    /// <summary>Most prompts prefilled together in one forward.</summary>
    public int PrefillBatch { get; init; } = 16;

    /// <summary>Threads that sample a decode step's rows at once (each row's draw is its own, so the count never
    /// changes a token); 1 samples on the engine thread alone. Default: one per core.</summary>
    public int SamplingThreads { get; init; } = Environment.ProcessorCount;

    /// <summary>Suggested wait for a refused request.</summary>
    public TimeSpan RetryAfter { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The model's name in metrics (e.g. "small@cpu:0").</summary>
    public string Name { get; init; } = "model";
}

/// <summary>One generated token of a request, in order; the last one carries why the request ended.</summary>
/// <param name="Token">The token id (&lt;|endoftext|&gt; included when the request stops on it).</param>
/// <param name="Step">The engine's decode-step count when the token was produced: tokens of different
/// requests with the same step came out of the same batch.</param>
public readonly record struct StreamedToken(int Token, FinishReason? Finish, long Step);

/// <summary>The engine is at its queue limit; try again after <see cref="RetryAfter"/>.</summary>
public sealed class ServerBusyException(int queued, TimeSpan retryAfter)
    : Exception($"The model is busy: {queued} requests are already waiting. Retry after {retryAfter.TotalSeconds:F0} s.")
{
    public TimeSpan RetryAfter { get; } = retryAfter;
}

/// <summary>
/// The model could not serve this one request: its logits were not finite (the checkpoint computes NaN or infinity
/// for this input), sampling failed, or the forward pass that carried it threw. The other requests in its batch are
/// not affected.
/// </summary>
public sealed class RequestFailedException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Continuous batching (Yu et al. 2022, "Orca"; as vLLM and TGI): requests join and leave the running batch
/// between decode steps, each with its own KV-cache slot, sampling settings and seed. One dedicated thread owns
/// the model and runs the loop (admit, one prefill chunk, one decode step for every running request), so no
/// caller's thread, and no Orleans turn, ever runs a forward pass. Cancelling a request, or abandoning its
/// stream, frees its slot at the next step.
/// </summary>
public sealed class ContinuousBatcher : IDisposable
{
    private readonly Gpt _model;
    private readonly BatcherOptions _options;
    private readonly SlotKvCache _cache;
    private readonly ConcurrentQueue<Request> _incoming = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Request?[] _slots;
    private readonly Thread _loop;
    private readonly CancellationTokenSource _stopping = new();
    private int _queued;
    private int _outstanding; // accepted requests whose caller is still there and that have not ended: what Slots + MaxQueue bounds
    private long _admitted;
    private long _generated;
    private int _consecutiveFailures;
    private long _failed;
    private string? _lastFailure;

    public ContinuousBatcher(Gpt model, BatcherOptions options)
    {
        _model = model;
        _options = options;
        if (options.MaxPromptTokens >= model.Config.BlockSize)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxPromptTokens, $"MaxPromptTokens must leave room in the block size {model.Config.BlockSize}");
        _cache = new SlotKvCache(model, options.Slots, model.Config.BlockSize);
        _slots = new Request?[options.Slots];
        model.eval();
        // From here libtorch runs on the engine's thread. The thread that built the model and this cache keeps OpenMP
        // workers of its own, which would leave the engine's workers sleeping between ops on a small machine: end them.
        OpenMp.ReleaseThisThreadsWorkers();
        _loop = new Thread(Loop) { IsBackground = true, Name = "ContinuousBatcher" };
        _loop.Start();
        ServingMetrics.Register(this, options.Name);
    }

    /// <summary>Requests waiting for a slot.</summary>
    public int Queued => Volatile.Read(ref _queued);

    /// <summary>Requests holding a slot (prefilling or decoding).</summary>
    public int Running => _slots.Count(s => s is not null);

    /// <summary>Requests that can decode at once.</summary>
    public int Slots => _slots.Length;

    /// <summary>Whether the engine has been shut down.</summary>
    public bool IsDisposed => _stopping.IsCancellationRequested;

    /// <summary>Decode steps run so far.</summary>
    public long Steps { get; private set; }

    /// <summary>Tokens generated since the engine started (what a tokens-per-second reading differences).</summary>
    public long Generated => Interlocked.Read(ref _generated);

    /// <summary>Requests that failed in a row since one last finished (a health signal: a model that fails everything
    /// it is given counts up here while the engine itself keeps running).</summary>
    public int ConsecutiveFailures => Volatile.Read(ref _consecutiveFailures);

    /// <summary>Requests failed since the engine started.</summary>
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Why the most recent failed request failed; null when none has.</summary>
    public string? LastFailure => Volatile.Read(ref _lastFailure);

    /// <summary>Where the decode thread's time went so far (benchmarks read it).</summary>
    public EngineTimings Timings { get; } = new();

    /// <summary>
    /// Queues a request and streams its tokens as they are generated. Throws <see cref="ServerBusyException"/>
    /// when the queue is full, and <see cref="ArgumentException"/> for a prompt or settings out of bounds.
    /// </summary>
    public IAsyncEnumerable<StreamedToken> GenerateAsync(int[] prompt, SamplingSettings settings, CancellationToken cancellationToken = default)
    {
        settings.Validate();
        if (prompt.Length == 0)
            throw new ArgumentException("The prompt is empty", nameof(prompt));
        if (prompt.Length > _options.MaxPromptTokens)
            throw new ArgumentException($"The prompt has {prompt.Length} tokens; the limit is {_options.MaxPromptTokens}", nameof(prompt));
        if (settings.MaxNewTokens > _options.MaxNewTokens)
            throw new ArgumentOutOfRangeException(nameof(settings), settings.MaxNewTokens, $"max_tokens is limited to {_options.MaxNewTokens}");
        SequenceRules.CheckInVocabulary(_model.Config, prompt, nameof(prompt));
        ObjectDisposedException.ThrowIf(_stopping.IsCancellationRequested, this);

        // Room is counted over slots and queue together, and a request gives its place back the moment it ends or its
        // caller leaves, not when the loop next gets to it: a caller who left, or whose last token it just read, must
        // never make the next request look like one too many.
        if (Interlocked.Increment(ref _outstanding) > _options.Slots + _options.MaxQueue)
        {
            Interlocked.Decrement(ref _outstanding);
            throw new ServerBusyException(_options.MaxQueue, _options.RetryAfter);
        }
        Interlocked.Increment(ref _queued);
        var request = new Request(prompt, new TokenSampler(settings, prompt));
        // The moment the caller cancels (an Orleans cancel message, a closed HTTP connection), not when its stream is
        // next read or disposed: the request leaves on the cancelling thread, before anything else that caller sends.
        if (cancellationToken.CanBeCanceled)
            request.Leaving = cancellationToken.UnsafeRegister(static state => { var (engine, r) = ((ContinuousBatcher, Request))state!; engine.Leave(r); }, (this, request));
        _incoming.Enqueue(request);
        _wake.Release();
        // Disposed between the check above and the enqueue (a hot swap retiring this engine): the loop may have
        // drained its queue already, so fail the request here rather than leave it waiting forever. Completing a
        // channel twice is harmless if the loop got to it too.
        if (_stopping.IsCancellationRequested)
            request.Tokens.Writer.TryComplete(new ObjectDisposedException(nameof(ContinuousBatcher)));
        return Read(request, cancellationToken);
    }

    private async IAsyncEnumerable<StreamedToken> Read(Request request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var token in request.Tokens.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                cancellationToken.ThrowIfCancellationRequested(); // tokens already buffered are not delivered after a cancel
                yield return token;
            }
        }
        finally
        {
            request.Leaving.Dispose();
            Leave(request);
        }
    }

    /// <summary>
    /// Finished, cancelled or abandoned by its consumer: either way the request's slot is no longer wanted. A request
    /// still waiting gives its queue place back now, not when a slot frees up to dequeue it, and one running gives
    /// its place back before the loop frees its slot: a caller who went away must not make the next caller's request
    /// look like one too many. Idempotent.
    /// </summary>
    private void Leave(Request request)
    {
        request.Abandoned = true;
        if (Interlocked.CompareExchange(ref request.QueueState, Request.LeftQueue, Request.Waiting) == Request.Waiting)
            Interlocked.Decrement(ref _queued);
        GiveBackPlace(request);
        _wake.Release();
    }

    private void Loop()
    {
        using var noGrad = no_grad(); // grad mode is per thread
        TokenSampler.WarmUp(); // once per process: the first requests would otherwise sample ~10x slower
        while (!_stopping.IsCancellationRequested)
        {
            try
            {
                bool worked = Admit();
                worked |= Prefill();
                worked |= DecodeStep();
                if (!worked)
                    _wake.Wait(_stopping.Token);
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                // Failures of a forward or of one row's sampling are handled where they happen, failing only the
                // requests involved; anything else leaves the slots' state unknown, so every running request fails
                // (and its slot is cleared). The engine keeps serving new ones.
                for (int s = 0; s < _slots.Length; s++)
                    if (_slots[s] is { } r)
                        Fail(s, r, new RequestFailedException($"The engine failed while serving this request: {e.Message}", e));
            }
        }
        for (int s = 0; s < _slots.Length; s++)
            if (_slots[s] is { } r)
                Finish(s, r, new ObjectDisposedException(nameof(ContinuousBatcher)));
        while (_incoming.TryDequeue(out var waiting))
            waiting.Tokens.Writer.TryComplete(new ObjectDisposedException(nameof(ContinuousBatcher)));
    }

    /// <summary>Frees abandoned slots and moves waiting requests into free slots, lowest first.</summary>
    private bool Admit()
    {
        bool changed = false;
        for (int s = 0; s < _slots.Length; s++)
            if (_slots[s] is { Abandoned: true } r)
            {
                Finish(s, r, error: null);
                changed = true;
            }
        for (int s = 0; s < _slots.Length && !_incoming.IsEmpty; s++)
        {
            if (_slots[s] is not null) continue;
            while (_incoming.TryDequeue(out var next))
            {
                if (Interlocked.CompareExchange(ref next.QueueState, Request.Dequeued, Request.Waiting) != Request.Waiting)
                {
                    next.Tokens.Writer.TryComplete(); // its caller left while it waited, and gave the place back then
                    continue;
                }
                Interlocked.Decrement(ref _queued);
                if (next.Abandoned)
                {
                    next.Tokens.Writer.TryComplete();
                    continue;
                }
                next.Order = _admitted++;
                _slots[s] = next;
                changed = true;
                break;
            }
        }
        return changed;
    }

    /// <summary>
    /// Prefills between decode steps. The longest-waiting prefilling request decides how: a long prompt, or one
    /// already part-way through, advances by one chunk alone (so it never stalls running streams for long);
    /// otherwise every waiting short prompt is prefilled in one padded batch (up to <see cref="BatcherOptions.PrefillBatch"/>),
    /// which costs far less per request than one forward each and keeps time to first token low when many arrive at once.
    /// </summary>
    private bool Prefill()
    {
        int oldest = -1;
        for (int s = 0; s < _slots.Length; s++)
            if (_slots[s] is { Decoding: false } r && (oldest < 0 || r.Order < _slots[oldest]!.Order))
                oldest = s;
        if (oldest < 0)
            return false;
        var first = _slots[oldest]!;
        if (first.Prefilled > 0 || first.Prompt.Length > _options.PrefillChunk)
            return PrefillOneChunk(oldest, first);

        var batch = Enumerable.Range(0, _slots.Length)
            .Where(s => _slots[s] is { Decoding: false, Prefilled: 0 } r && r.Prompt.Length <= _options.PrefillChunk)
            .OrderBy(s => _slots[s]!.Order)
            .Take(_options.PrefillBatch)
            .ToArray();
        int[] lengths = [.. batch.Select(s => _slots[s]!.Prompt.Length)];
        int longest = lengths.Max();
        var ids = new long[batch.Length * longest]; // right-padded with token 0; padding is never attended to
        for (int i = 0; i < batch.Length; i++)
            for (int j = 0; j < lengths[i]; j++)
                ids[i * longest + j] = _slots[batch[i]]!.Prompt[j];

        using var scope = NewDisposeScope();
        long start = Stopwatch.GetTimestamp();
        if (Forward(batch, () => _model.NextTokenLogits(tensor(ids, [batch.Length, longest]), _cache.PrefillMany(batch, lengths), lengths)) is not { } logits) // (B, V)
            return true;
        var all = MemoryMarshal.Cast<byte, float>(logits.bytes);
        int vocab = (int)logits.shape[1];
        Timings.Add(ref Timings.PrefillTicks, start);
        for (int i = 0; i < batch.Length; i++)
        {
            var request = _slots[batch[i]]!;
            request.Prefilled = request.Prompt.Length;
            request.Decoding = true;
            SampleAndEmit(batch[i], request, all.Slice(i * vocab, vocab));
        }
        return true;
    }

    /// <summary>Prefills the next chunk of one request's prompt.</summary>
    private bool PrefillOneChunk(int slot, Request request)
    {
        int count = Math.Min(_options.PrefillChunk, request.Prompt.Length - request.Prefilled);
        using var scope = NewDisposeScope();
        var chunk = tensor(request.Prompt.AsSpan(request.Prefilled, count).ToArray().Select(i => (long)i).ToArray(), [1L, count]); // (1, t)
        long start = Stopwatch.GetTimestamp();
        if (Forward([slot], () => _model.NextTokenLogits(chunk, _cache.Prefill(slot))) is not { } logits) // (1, V)
            return true;
        var row = MemoryMarshal.Cast<byte, float>(logits.bytes);
        Timings.Add(ref Timings.PrefillTicks, start);
        request.Prefilled += count;
        if (request.Prefilled == request.Prompt.Length)
        {
            request.Decoding = true;
            SampleAndEmit(slot, request, row);
        }
        return true;
    }

    /// <summary>One decode step for every request past its prefill.</summary>
    private bool DecodeStep()
    {
        int rows = 0;
        for (int s = 0; s < _slots.Length; s++)
            if (_slots[s] is { Decoding: true }) rows = s + 1;
        if (rows == 0)
            return false;

        var decoding = new bool[rows];
        var input = new long[rows];
        for (int s = 0; s < rows; s++)
            if (_slots[s] is { Decoding: true } r)
            {
                decoding[s] = true;
                input[s] = r.Last;
            }
        using var scope = NewDisposeScope();
        long start = Stopwatch.GetTimestamp();
        int[] served = [.. Enumerable.Range(0, rows).Where(s => decoding[s])];
        if (Forward(served, () => _model.NextTokenLogits(tensor(input, [rows, 1L]), _cache.Decode(rows, decoding))) is not { } logits) // (R, V)
            return true;
        int vocab = (int)logits.shape[1];
        Timings.Add(ref Timings.DecodeTicks, start);
        Steps++;
        Timings.DecodeRows += rows;

        // Rows are sampled on all cores at once (each request has its own sampler, so the draws do not depend on
        // how rows are spread), then emitted in slot order on this thread, which alone touches the slots. The threads
        // are libtorch's own OpenMP team, as for the decode kernels: on .NET's pool a sampling thread competed with the
        // OpenMP worker still spinning after the step's last op (three busy threads on two cores).
        long sampling = Stopwatch.GetTimestamp();
        var chosen = new (int Token, RequestFailedException? Error)[rows];
        unsafe
        {
            fixed (float* first = MemoryMarshal.Cast<byte, float>(logits.bytes)) // libtorch's memory: fixed only yields its address
            {
                nint address = (nint)first;
                OpenMp.ForEachThread((part, parts) =>
                {
                    for (int s = part; s < rows; s += parts)
                        if (decoding[s] && _slots[s] is { } r)
                            chosen[s] = Sample(r, new ReadOnlySpan<float>((float*)address + (long)s * vocab, vocab));
                }, rows < ParallelSamplingRows ? 1 : Math.Max(1, _options.SamplingThreads));
            }
        }
        Timings.Add(ref Timings.SamplingTicks, sampling);
        for (int s = 0; s < rows; s++)
            if (decoding[s] && _slots[s] is { } r)
                Deliver(s, r, chosen[s]);
        return true;
    }

    /// <summary>Below this many rows a decode step samples them one after another: handing rows to other threads costs
    /// more than the few rows' sampling (~0.3 ms each for GPT-2's 50k vocabulary).</summary>
    private const int ParallelSamplingRows = 4;

    /// <summary>Runs one forward pass (contiguous logits) for the requests in <paramref name="slots"/>; when it throws,
    /// fails those requests alone and returns null. The other slots' caches were not written by it.</summary>
    private Tensor? Forward(int[] slots, Func<Tensor> forward)
    {
        try
        {
            return forward().contiguous();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            foreach (int s in slots)
                if (_slots[s] is { } r)
                    Fail(s, r, new RequestFailedException($"The model's forward pass failed for this request: {e.Message}", e));
            return null;
        }
    }

    /// <summary>
    /// Chooses the request's next token from its row of logits (V), timed as sampling, and emits it. A row that is
    /// not finite, or whose sampling throws, fails this request alone: the rest of the batch goes on.
    /// </summary>
    private void SampleAndEmit(int slot, Request request, ReadOnlySpan<float> logits)
    {
        long start = Stopwatch.GetTimestamp();
        var sampled = Sample(request, logits);
        Timings.Add(ref Timings.SamplingTicks, start);
        Deliver(slot, request, sampled);
    }

    /// <summary>Emits a sampled token, or fails the request alone when sampling gave an error instead.</summary>
    private void Deliver(int slot, Request request, (int Token, RequestFailedException? Error) sampled)
    {
        if (sampled.Error is { } error)
            Fail(slot, request, error);
        else
            Emit(slot, request, sampled.Token);
    }

    /// <summary>The request's next token from its row of logits, or why there is none. Touches only the request's
    /// own sampler, so rows can be sampled on several threads at once.</summary>
    private (int Token, RequestFailedException? Error) Sample(Request request, ReadOnlySpan<float> logits)
    {
        try
        {
            // MaxMagnitude is NaN when any element is; +-infinity when any is infinite.
            if (!float.IsFinite(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(logits)))
                throw new RequestFailedException($"{_options.Name} computed logits that are not finite (NaN or infinite) for this request " +
                    $"after {request.Generated} generated tokens: the checkpoint is numerically broken for this input");
            return (request.Sampler.Next(logits), null);
        }
        catch (Exception e)
        {
            return (0, e as RequestFailedException ?? new RequestFailedException($"Sampling failed for this request: {e.Message}", e));
        }
    }

    private void Emit(int slot, Request request, int token)
    {
        long now = Stopwatch.GetTimestamp();
        var model = new KeyValuePair<string, object?>("model", _options.Name);
        if (request.Generated == 0)
            ServingMetrics.TimeToFirstToken.Record(Stopwatch.GetElapsedTime(request.Arrived, now).TotalSeconds, model);
        else
            ServingMetrics.InterTokenLatency.Record(Stopwatch.GetElapsedTime(request.LastAt, now).TotalSeconds, model);
        ServingMetrics.GeneratedTokens.Add(1, model);
        Interlocked.Increment(ref _generated);
        request.LastAt = now;
        request.Last = token;
        request.Generated++;
        var finish = SequenceRules.FinishAfter(token, request.Generated, request.Sampler.Settings.MaxNewTokens, _cache.Length(slot) >= _cache.Capacity);
        if (finish is null)
        {
            request.Tokens.Writer.TryWrite(new StreamedToken(token, finish, Steps));
            return;
        }
        // The last token: slot and place are free before the caller can read it (and send its next request).
        Release(slot, request);
        if (!request.Abandoned)
            Volatile.Write(ref _consecutiveFailures, 0);
        request.Tokens.Writer.TryWrite(new StreamedToken(token, finish, Steps));
        request.Tokens.Writer.TryComplete();
    }

    private void Finish(int slot, Request request, Exception? error)
    {
        // Free the slot before completing the stream, so whoever sees the end also sees the slot free.
        Release(slot, request);
        request.Tokens.Writer.TryComplete(error);
    }

    private void Release(int slot, Request request)
    {
        _slots[slot] = null;
        _cache.Release(slot);
        GiveBackPlace(request);
    }

    /// <summary>Counts a request out of Slots + MaxQueue, once, whoever gets there first: the engine ending it or its
    /// caller leaving.</summary>
    private void GiveBackPlace(Request request)
    {
        if (Interlocked.Exchange(ref request.PlaceGivenBack, 1) == 0)
            Interlocked.Decrement(ref _outstanding);
    }

    /// <summary>Ends a request the model could not serve: its slot is cleared (it may hold NaN) and the failure counted.</summary>
    private void Fail(int slot, Request request, RequestFailedException error)
    {
        _cache.Scrub(slot);
        Interlocked.Increment(ref _failed);
        Interlocked.Increment(ref _consecutiveFailures);
        Volatile.Write(ref _lastFailure, error.Message);
        Finish(slot, request, error);
    }

    public void Dispose()
    {
        if (_stopping.IsCancellationRequested) return;
        ServingMetrics.Unregister(this);
        _stopping.Cancel();
        _loop.Join();
        _cache.Dispose();
        // _wake is not disposed: a consumer may still be reading tokens the engine produced before it stopped,
        // and its stream signals _wake when it ends. A SemaphoreSlim whose wait handle was never used holds no
        // operating-system resource, so leaving it to the GC costs nothing.
    }

    /// <summary>Cumulative time of the decode thread's three kinds of work, in Stopwatch ticks.</summary>
    public sealed class EngineTimings
    {
        public long PrefillTicks;   // prompt chunks through the model
        public long DecodeTicks;    // decode-step forwards (all rows at once)
        public long SamplingTicks;  // choosing tokens from logits, row by row
        public long DecodeRows;     // rows summed over decode steps

        internal void Add(ref long counter, long start) => counter += Stopwatch.GetTimestamp() - start;

        public static double Seconds(long ticks) => (double)ticks / Stopwatch.Frequency;
    }

    private sealed class Request(int[] prompt, TokenSampler sampler)
    {
        public int[] Prompt { get; } = prompt;
        public TokenSampler Sampler { get; } = sampler;
        public Channel<StreamedToken> Tokens { get; } = Channel.CreateUnbounded<StreamedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        public const int Waiting = 0, Dequeued = 1, LeftQueue = 2;

        public volatile bool Abandoned;

        /// <summary>1 once the request no longer counts against Slots + MaxQueue.</summary>
        public int PlaceGivenBack;

        /// <summary>The caller's cancellation callback (<see cref="Leave"/>).</summary>
        public CancellationTokenRegistration Leaving;

        /// <summary>Who counts this request out of the queue: the engine taking it (<see cref="Dequeued"/>) or its
        /// caller leaving first (<see cref="LeftQueue"/>); whichever changes it from <see cref="Waiting"/>.</summary>
        public int QueueState;

        public long Arrived { get; } = Stopwatch.GetTimestamp();
        public long LastAt;
        public long Order;
        public int Prefilled;
        public bool Decoding;
        public int Last;
        public int Generated;
    }
}
