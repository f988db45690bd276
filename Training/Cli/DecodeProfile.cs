using System.Diagnostics;
using System.Runtime.InteropServices;
using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Cli;

/// <summary>
/// Where one decode step's time goes: every operation of the step timed on its own, at the step's shapes and
/// dtypes, beside the whole step timed through the engine's own path (the slot cache and the model). What the
/// parts do not add up to is the cost of stitching them together (TorchSharp calls, allocation, caches gone cold).
/// </summary>
/// <remarks>
/// Parts run on stand-in modules of the model's shapes (their weights are random either way, and a product's time
/// does not depend on the values), each repeated on the same weights, so a part whose weights fit the caches reads
/// them from there: the gap to the whole step includes streaming the weights from memory. Sampling is timed inside
/// the whole step, on the model's own logits. Times are medians of repeats.
/// </remarks>
internal static class DecodeProfile
{
    /// <summary>One line of the profile: a part of the step and its median milliseconds per step.</summary>
    public sealed record Part(string Name, double Milliseconds);

    /// <summary>The parts of a step (each multiplied by how often the step runs it), the whole step measured end to end,
    /// the floor: the same step on a skeleton of the model (same layers and heads, 8 numbers per head, a 1k
    /// vocabulary), whose arithmetic is negligible, so what it costs is the calls themselves; and the same step through
    /// a fixed batch's cache (rows that start and advance together), which shows what the engine's per-slot cache costs.</summary>
    public sealed record Result(IReadOnlyList<Part> Parts, double Step, double Floor, double FixedBatch)
    {
        /// <summary>What the parts add up to, in milliseconds.</summary>
        public double PartsTotal => Parts.Sum(p => p.Milliseconds);
    }

    /// <summary>Profiles one decode step of <paramref name="rows"/> sequences that each attend to <paramref name="context"/> positions.</summary>
    public static Result Measure(Gpt gpt, int rows, int context, int repeats)
    {
        var config = gpt.Config;
        var dtype = gpt.Dtype;
        var attention = gpt.AttentionDtype;
        long R = rows, C = config.Embedding, nh = config.Heads, hs = config.HeadSize, V = config.VocabSize, L = context;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        TokenSampler.WarmUp();

        // Stand-ins of the model's modules (disposed here: the output-sized embedding alone is 150 MB in fp32).
        using var lnf = nn.LayerNorm(C).to(dtype);
        using var qkv = new Conv1D(C, 3 * C).to(dtype);
        using var proj = new Conv1D(C, C).to(dtype);
        using var fc = new Conv1D(C, 4 * C).to(dtype);
        using var fc2 = new Conv1D(4 * C, C).to(dtype);
        foreach (var m in new nn.Module[] { qkv, proj, fc, fc2 })
        {
            foreach (var p in m.parameters()) nn.init.normal_(p, 0, 0.02);
            m.eval(); // as the model's are: inference reads the packed weights
        }
        using var wte = nn.Embedding(V, C).to(dtype);
        using var wpe = nn.Embedding(config.BlockSize, C).to(dtype);
        var x = randn(R, 1, C).to(dtype);                                 // (R, 1, C): the residual stream
        var ids = randint(0, V, [R, 1]);                                  // (R, 1)
        var positions = full([R, 1], L - 1, ScalarType.Int64);            // (R, 1)
        var cacheKeys = randn(R, nh, L + 1, hs).to(attention);            // one layer's keys, (R, nh, L + 1, hs)
        var writeRows = (arange(R * nh, dtype: ScalarType.Int64) * (L + 1)) + (L - 1); // each head's new key: one row of the flattened keys
        var mask = ones([R, 1, 1, L], ScalarType.Bool);                   // (R, 1, 1, L)
        var q = randn(R, nh, 1, hs).to(attention);                        // (R, nh, 1, hs)
        var k = randn(R, nh, 1, hs).to(dtype);
        var y = randn(R, nh, 1, hs).to(attention);
        var hidden = randn(R, 4 * C).to(dtype).view(R, 1, 4 * C);          // the MLP's inner activation
        var qkvOut = qkv.forward(x);                                      // (R, 1, 3C)

        double Time(Action step)
        {
            step(); step(); // warm up allocations and threads
            var times = new double[repeats];
            for (int i = 0; i < repeats; i++)
            {
                long start = Stopwatch.GetTimestamp();
                using (NewDisposeScope()) step();
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            Array.Sort(times);
            return times[repeats / 2];
        }

        int layers = config.Layers;
        var parts = new List<Part>
        {
            new("embedding (wte + wpe)", Time(() => _ = wte.forward(ids) + wpe.forward(positions))),
            new($"layer norms ({2 * layers + 1})", (2 * layers + 1) * Time(() => lnf.forward(x))),
            new("qkv projection (C -> 3C)", layers * Time(() => qkv.forward(x))),
        };
        if (DecodeAttention.Applies(qkvOut, gpt.CacheDtype, hs))
        {
            // Our own kernel: the KV write, the attention over each row's positions and the merged heads in one call.
            var keys = randn(R, nh, L + 1, hs).to(dtype);                 // one layer's cache, in the model's dtype
            var values = randn(R, nh, L + 1, hs).to(dtype);
            var flat = qkvOut.view(R, 3 * C);
            int[] at = [.. Enumerable.Repeat(context - 1, rows)];
            parts.Add(new($"attention, own kernel (KV write, {L} keys a row, heads merged)", layers * Time(() => DecodeAttention.Step(flat, keys, values, at))));
        }
        else
        {
            parts.AddRange(
            [
                new("split heads, cast to attention dtype", layers * Time(() =>
                {
                    var split = qkvOut.split(C, dim: 2);
                    _ = split[0].view(R, 1, nh, hs).transpose(1, 2).to(attention);
                    _ = split[1].view(R, 1, nh, hs).transpose(1, 2);
                    _ = split[2].view(R, 1, nh, hs).transpose(1, 2);
                })),
                new("KV write (rows into slots)", layers * 2 * Time(() => cacheKeys.view(-1, hs).index_copy_(0, writeRows, k.to(attention).reshape(-1, hs)))),
                new($"attention (SDPA over {L} keys)", layers * Time(() =>
                    nn.functional.scaled_dot_product_attention(q, cacheKeys.narrow(2, 0, L), cacheKeys.narrow(2, 0, L), mask, 0.0, is_casual: false))),
                new("merge heads, cast back", layers * Time(() => y.transpose(1, 2).contiguous().view(R, 1, C).to(dtype))),
            ]);
        }
        parts.AddRange(
        [
            new("attention output projection (C -> C)", layers * Time(() => proj.forward(x))),
            new("MLP up (C -> 4C)", layers * Time(() => fc.forward(x))),
            new("GELU", layers * Time(() => nn.functional.gelu(hidden, TorchSharp.Modules.GELU.Approximate.tanh))),
            new("MLP down (4C -> C)", layers * Time(() => fc2.forward(hidden))),
            new("residual adds", 2 * layers * Time(() => _ = x + x)),
            new($"output layer (C -> {V})", Time(() => gpt.Logits(x.view(R, C)))),
        ]);
        using var logits = gpt.Logits(x.view(R, C)); // (R, V)
        parts.Add(new("logits to fp32, contiguous", Time(() => logits.to(ScalarType.Float32).contiguous())));
        // An untimed round of each path first: the code of both must be past .NET's first tier before either is
        // timed (without this round the fixed batch read 21 ms at one row, against 15 ms with it).
        WholeStep(gpt, rows, context, repeats);
        WholeStep(gpt, rows, context, repeats, fixedBatch: true);
        var (step, sampling) = WholeStep(gpt, rows, context, repeats);
        var (fixedStep, _) = WholeStep(gpt, rows, context, repeats, fixedBatch: true);
        parts.Add(new("sampling (top-p 0.9, row by row; timed inside the step)", sampling));
        using var skeleton = new Gpt(config with { Embedding = config.Heads * 8, VocabSize = 1024, Dropout = 0 });
        skeleton.InitializeWeights(seed: 1);
        skeleton.eval();
        skeleton.to(dtype);
        var (floor, _) = WholeStep(skeleton, rows, context, repeats);
        return new Result(parts, step, floor, fixedStep);
    }

    /// <summary>A decode step as the engine runs it (slot cache view, model forward, fp32 logits, sampling every row), or
    /// with <paramref name="fixedBatch"/> as a fixed batch runs it (one cache whose rows advance together).
    /// Returns the medians of the whole step and of its sampling, in milliseconds.</summary>
    private static (double Step, double Sampling) WholeStep(Gpt gpt, int rows, int context, int repeats, bool fixedBatch = false)
    {
        var samplers = Enumerable.Range(0, rows).Select(i => new TokenSampler(new SamplingSettings { TopP = 0.9, Seed = i })).ToArray();
        int steps = repeats + 2;
        int prompt = Math.Max(1, context - steps / 2); // the steps' contexts centre on `context`
        // Only the path's own cache: the engine's holds a whole block per slot (2.4 GB for small at 32 rows, in fp32).
        using var slotCache = fixedBatch ? null : new SlotKvCache(gpt, rows, gpt.Config.BlockSize); // as the engine
        using var fixedCache = fixedBatch ? gpt.NewCache(rows, prompt + steps) : null;              // as TextGenerator: the rows' own length
        int[] slots = [.. Enumerable.Range(0, rows)];
        int[] lengths = [.. slots.Select(_ => prompt)];
        var random = new Random(rows);
        using (NewDisposeScope())
        {
            var promptIds = tensor(Enumerable.Range(0, rows * prompt).Select(_ => (long)random.Next(gpt.Config.VocabSize)).ToArray(), [rows, prompt]);
            if (fixedCache is not null)
                gpt.NextTokenLogits(promptIds, fixedCache);
            else
                gpt.NextTokenLogits(promptIds, slotCache!.PrefillMany(slots, lengths), lengths);
        }
        var decoding = Enumerable.Repeat(true, rows).ToArray();
        var input = new long[rows];
        var times = new List<double>();
        var samplingTimes = new List<double>();
        for (int i = 0; i < steps; i++)
        {
            long start = Stopwatch.GetTimestamp();
            using (NewDisposeScope())
            {
                using var logits = gpt.NextTokenLogits(tensor(input, [rows, 1L]), (IKvCache?)fixedCache ?? slotCache!.Decode(rows, decoding)).contiguous(); // (R, V)
                var all = MemoryMarshal.Cast<byte, float>(logits.bytes);
                int vocab = (int)logits.shape[1];
                long sampling = Stopwatch.GetTimestamp();
                for (int r = 0; r < rows; r++) input[r] = samplers[r].Next(all.Slice(r * vocab, vocab));
                if (i >= 2) samplingTimes.Add(Stopwatch.GetElapsedTime(sampling).TotalMilliseconds);
            }
            if (i >= 2) times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        times.Sort();
        samplingTimes.Sort();
        return (times[times.Count / 2], samplingTimes[samplingTimes.Count / 2]);
    }
}
