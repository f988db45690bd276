using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using OrleansGpt.Training.Numerics;

namespace OrleansGpt.Training.Generation;

/// <summary>
/// Chooses next tokens for one sequence: its settings, its own random generator (so a seeded request draws
/// the same numbers whether it runs alone or in a batch), and the tokens it has seen (for the repetition
/// penalty). Owned by one request; not thread-safe.
/// </summary>
/// <remarks>
/// Works on a CPU copy of one row of logits. Top-k and top-p use a selection (three-way quickselect) in
/// O(V) expected time instead of sorting the 50k vocabulary, which cost ~5 ms per row per step here.
/// </remarks>
public sealed class TokenSampler
{
    private readonly HashSet<int> _seen;
    private SplitMix64 _random;
    private float[] _keys = [];
    private int[] _ids = [];
    private ushort[] _buckets = [];

    /// <param name="context">The prompt, which the repetition penalty counts as already seen.</param>
    public TokenSampler(SamplingSettings settings, IEnumerable<int>? context = null)
    {
        Settings = settings.Validate();
        Seed = settings.Seed ?? Random.Shared.NextInt64(0, long.MaxValue);
        _random = new SplitMix64((ulong)Seed);
        _seen = context is null ? [] : [.. context];
    }

    /// <summary>
    /// Runs nucleus sampling over a GPT-2-sized vocabulary for about half a second, once per process, so that .NET has
    /// compiled its optimised code (System.Numerics.Tensors' vectorised kernels included, which start as precompiled
    /// generic code) before anything is timed or served: before that, a row took ~3 ms here instead of ~0.3-0.5 ms.
    /// </summary>
    public static void WarmUp()
    {
        lock (s_warmUpLock)
        {
            if (s_warm) return;
            var random = new Random(1);
            var logits = new float[Text.Gpt2Tokenizer.VocabSize];
            for (int i = 0; i < logits.Length; i++) logits[i] = (float)(random.NextDouble() - 0.5); // near-uniform: the widest nucleus
            var sampler = new TokenSampler(new SamplingSettings { TopP = 0.9, Seed = 1 });
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (int calls = 0; calls < 64 || clock.ElapsedMilliseconds < 500; calls++)
                sampler.Next(logits);
            s_warm = true;
        }
    }

    private static readonly Lock s_warmUpLock = new();
    private static bool s_warm;

    /// <summary>The settings in force.</summary>
    public SamplingSettings Settings { get; }

    /// <summary>The seed actually used (the request's, or the one picked for it).</summary>
    public long Seed { get; }

    /// <summary>Picks the next token and remembers it for the repetition penalty.</summary>
    /// <param name="logits">Next-token logits (V).</param>
    public int Next(ReadOnlySpan<float> logits)
    {
        int n = Filter(logits, Settings, _seen, ref _keys, ref _ids, ref _buckets);
        int token = n == 1 ? _ids[0] : Draw(n);
        _seen.Add(token);
        return token;
    }

    /// <summary>Inverse CDF over the kept tokens in the order Filter left them: any fixed order gives each
    /// token its probability, and the order is a pure function of the logits, so draws are reproducible.</summary>
    /// <remarks>Whole blocks are skipped by their (vectorised) sums and only the block where u falls is walked token by
    /// token: a near-uniform row keeps ~38,500 tokens, and one running sum over all of them took ~40 us.</remarks>
    private int Draw(int n)
    {
        const int Block = 512;
        var probs = _keys.AsSpan(0, n);
        double u = _random.NextDouble() * TensorPrimitives.Sum(probs);
        double cumulative = 0;
        int start = 0;
        for (; start + Block < n; start += Block)
        {
            double block = TensorPrimitives.Sum(probs.Slice(start, Block));
            if (u < cumulative + block)
                break;
            cumulative += block;
        }
        for (int i = start; i < n; i++)
        {
            cumulative += probs[i];
            if (u < cumulative)
                return _ids[i];
        }
        return _ids[n - 1]; // u landed in the rounding gap at the very end
    }

    /// <summary>
    /// The tokens that may be drawn and their renormalised probabilities, most likely first, after the
    /// repetition penalty, temperature, top-k and top-p in that order. Greedy settings give one candidate.
    /// </summary>
    /// <param name="logits">Next-token logits (V).</param>
    /// <param name="seen">Token ids the repetition penalty applies to.</param>
    public static (float[] Probs, int[] Ids) Candidates(ReadOnlySpan<float> logits, SamplingSettings settings, IReadOnlyCollection<int>? seen = null)
    {
        float[] keys = [];
        int[] ids = [];
        ushort[] buckets = [];
        int n = Filter(logits, settings.Validate(), seen, ref keys, ref ids, ref buckets);
        var probs = keys[..n];
        var tokens = ids[..n];
        double total = probs.Sum(p => (double)p);
        for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / total);
        Array.Sort(probs, tokens); // ascending ...
        Array.Reverse(probs);      // ... then most likely first
        Array.Reverse(tokens);
        return (probs, tokens);
    }

    /// <summary>
    /// Leaves the candidate token ids in ids[0..n) and their probabilities (not renormalised after top-p) in
    /// keys[0..n); returns n.
    /// </summary>
    private static int Filter(ReadOnlySpan<float> logits, SamplingSettings settings, IReadOnlyCollection<int>? seen, ref float[] keys, ref int[] ids, ref ushort[] buckets)
    {
        int v = logits.Length;
        if (v == 0)
            throw new ArgumentException("No logits to sample from", nameof(logits));
        if (keys.Length < v)
        {
            keys = new float[v];
            ids = new int[v];
            buckets = new ushort[v];
        }
        var x = keys.AsSpan(0, v);
        logits.CopyTo(x);
        if (float.IsNaN(TensorPrimitives.Max(x)))
            for (int i = 0; i < v; i++)
                if (float.IsNaN(x[i])) x[i] = float.NegativeInfinity;
        if (settings.LogitBias is { Count: > 0 } bias)
            foreach (var (id, value) in bias)
                if ((uint)id < (uint)v)
                    x[id] = value <= -100 ? float.NegativeInfinity : x[id] + (float)value; // -100 is a ban, as OpenAI defines it

        if (settings.RepetitionPenalty != 1.0 && seen is not null)
        {
            float penalty = (float)settings.RepetitionPenalty;
            foreach (int id in seen)
                if ((uint)id < (uint)v)
                    x[id] = x[id] > 0 ? x[id] / penalty : x[id] * penalty;
        }

        if (settings.Temperature == 0 || settings.TopK == 1)
        {
            ids[0] = TensorPrimitives.IndexOfMax(x);
            keys[0] = 1;
            return 1;
        }

        int n = v;
        bool topK = settings.TopK > 0 && settings.TopK < v;
        if (topK)
        {
            for (int i = 0; i < v; i++) ids[i] = i;
            n = SelectLargest(keys, ids, n, settings.TopK, weighByKey: false);
        }

        // softmax(logits / T) over the candidates, computed stably from the maximum (vectorised: this runs
        // over all 50k logits every step). c holds (logit - max) / T, the log-probability up to a constant.
        var c = keys.AsSpan(0, n);
        float max = TensorPrimitives.Max(c);
        if (float.IsNegativeInfinity(max))
            throw new InvalidOperationException("Every logit is -inf or NaN; there is nothing to sample");
        TensorPrimitives.Subtract(c, max, c);
        TensorPrimitives.Multiply(c, (float)(1.0 / settings.Temperature), c);
        bool topP = settings.TopP < 1.0;
        if (topP && !topK)
            AssignBuckets(c, buckets);
        TensorPrimitives.Exp(c, c);
        TensorPrimitives.Divide(c, TensorPrimitives.Sum(c), c);

        if (!topP)
        {
            if (!topK)
                for (int i = 0; i < v; i++) ids[i] = i;
            return n;
        }
        if (topK)
            return SelectLargest(keys, ids, n, settings.TopP, weighByKey: true);
        return Nucleus(keys, ids, buckets, v, settings.TopP);
    }

    // Top-p over the whole vocabulary without sorting it. Tokens are bucketed by how far their log-probability
    // lies below the maximum (BucketsPerNat buckets per nat); whole buckets are taken from the top until the
    // next one would reach p, and only that boundary bucket is resolved token by token. Exact: bucketing only
    // groups tokens, it never decides between two tokens of different probability in the wrong order.
    private const int BucketsPerNat = 256;
    private const int BucketCount = 16 * BucketsPerNat; // 16 nats: everything further down shares the last bucket

    private static void AssignBuckets(ReadOnlySpan<float> logProbs, ushort[] buckets)
    {
        // 16 at a time where the CPU has 512-bit vectors (28 -> ~3 us for a 50k row here): the buckets the scalar loop
        // below gives, since distances are >= 0 (clamped, then truncated toward zero either way).
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var scale = Vector512.Create(-(float)BucketsPerNat);
            var last = Vector512.Create((float)(BucketCount - 1));
            ref float source = ref MemoryMarshal.GetReference(logProbs);
            ref ushort target = ref MemoryMarshal.GetArrayDataReference(buckets);
            for (; i + 16 <= logProbs.Length; i += 16)
            {
                var distance = Vector512.Min(Vector512.LoadUnsafe(ref source, (nuint)i) * scale, last); // +inf -> last
                var whole = Vector512.ConvertToInt32(distance).AsUInt32();
                Vector256.Narrow(whole.GetLower(), whole.GetUpper()).StoreUnsafe(ref target, (nuint)i);
            }
        }
        for (; i < logProbs.Length; i++)
        {
            float distance = -logProbs[i] * BucketsPerNat; // >= 0; +inf for -inf logits
            buckets[i] = distance < BucketCount - 1 ? (ushort)distance : (ushort)(BucketCount - 1);
        }
    }

    private static int Nucleus(float[] probs, int[] ids, ushort[] buckets, int v, double p)
    {
        Span<double> mass = stackalloc double[BucketCount];
        Span<int> count = stackalloc int[BucketCount];
        mass.Clear();
        count.Clear();
        for (int i = 0; i < v; i++)
        {
            mass[buckets[i]] += probs[i];
            count[buckets[i]]++;
        }

        int boundary = 0;
        double before = 0;
        while (boundary < BucketCount - 1 && before + mass[boundary] < p)
            before += mass[boundary++];

        // Resolve the boundary bucket: gather its tokens and keep the largest ones reaching the rest of p.
        var edgeKeys = new float[count[boundary]];
        var edgeIds = new int[count[boundary]];
        for (int i = 0, j = 0; i < v; i++)
            if (buckets[i] == boundary)
            {
                edgeKeys[j] = probs[i];
                edgeIds[j++] = i;
            }
        int edge = SelectLargest(edgeKeys, edgeIds, edgeKeys.Length, p - before, weighByKey: true);

        // Compact the nucleus to the front, in token order, then append the chosen boundary tokens.
        int n = 0;
        for (int i = 0; i < v; i++)
            if (buckets[i] < boundary)
            {
                probs[n] = probs[i];
                ids[n++] = i;
            }
        for (int j = 0; j < edge; j++)
        {
            probs[n] = edgeKeys[j];
            ids[n++] = edgeIds[j];
        }
        return n;
    }

    /// <summary>
    /// Reorders keys[0..n) (with ids alongside) so that the returned count m of largest keys come first, m being
    /// the smallest number whose weights sum to at least <paramref name="target"/>: each element weighs 1
    /// (top-k: m = target) or its key (top-p: the nucleus). Three-way quickselect, O(n) expected.
    /// </summary>
    internal static int SelectLargest(float[] keys, int[] ids, int n, double target, bool weighByKey)
    {
        int lo = 0, hi = n; // accepted: [0, lo); undecided: [lo, hi); rejected: [hi, n)
        double need = target;
        while (hi - lo > 1)
        {
            float pivot = MedianOfThree(keys[lo], keys[lo + (hi - lo) / 2], keys[hi - 1]);
            // Partition [lo, hi) into > pivot [lo, gt), == pivot [gt, lt), < pivot [lt, hi).
            int gt = lo, i = lo, lt = hi;
            double sumGreater = 0, sumEqual = 0;
            while (i < lt)
            {
                float k = keys[i];
                if (k > pivot)
                {
                    sumGreater += weighByKey ? k : 1;
                    Swap(keys, ids, i++, gt++);
                }
                else if (k < pivot)
                {
                    Swap(keys, ids, i, --lt);
                }
                else
                {
                    sumEqual += weighByKey ? k : 1;
                    i++;
                }
            }

            if (sumGreater >= need)
            {
                hi = gt; // the boundary lies among the greater ones
            }
            else if (sumGreater + sumEqual >= need)
            {
                double each = weighByKey ? pivot : 1;
                int take = (int)Math.Clamp(Math.Ceiling((need - sumGreater) / each), 1, lt - gt);
                return gt + take;
            }
            else
            {
                need -= sumGreater + sumEqual; // take all of them, look further down
                lo = lt;
            }
        }
        return hi > lo ? lo + 1 : lo;
    }

    private static float MedianOfThree(float a, float b, float c) =>
        Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));

    private static void Swap(float[] keys, int[] ids, int a, int b)
    {
        (keys[a], keys[b]) = (keys[b], keys[a]);
        (ids[a], ids[b]) = (ids[b], ids[a]);
    }
}
