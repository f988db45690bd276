using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// Causal self-attention over whole sequences, with dropout on the attention weights, forward and backward (the
/// FlashAttention-2 scheme: blocks of 64 queries against blocks of 64 keys, the softmax kept online, nothing of T x T
/// size ever stored; the backward pass recomputes the weights from the saved log-sum-exp). For training and evaluation;
/// decoding from a cache has <see cref="DecodeAttention"/>.
/// </summary>
/// <remarks>
/// <para>Why: libtorch's CPU flash attention takes no dropout, so GPT-2's attention dropout (0.1) sent training to its
/// unfused path, which writes the 512 x 512 weights of every head, draws their mask element by element on one thread
/// and runs softmax, mask and both products as separate passes: the tiny preset at 8 x 512 took 148 ms a layer forward
/// and backward against 50 without dropout, most of a training step. Here the mask is a hash of (seed, head, query, key),
/// computed where a weight is used and again in the backward pass, so it is never stored either.</para>
/// <para>Numerics: fp32 throughout (bf16 inputs widened, the output and gradients rounded once to nearest even); the
/// query is scaled by 1/sqrt(hs) before its dot products, each row's weights normalised by their own maximum. Dropout
/// keeps a weight with probability 1 - p and scales it by 1/(1 - p), as torch's dropout does; the softmax's sum is over
/// the weights before dropout.</para>
/// <para>Work: (sequence, head) pairs are shared out over libtorch's OpenMP team; each pair's queries, keys and values
/// are widened into the thread's own scratch once (one head of 512 positions: 128 KB each) and stay in its cache.</para>
/// </remarks>
public static unsafe class CausalAttention
{
    /// <summary>Head widths this kernel takes: multiples of 16 (one vector of floats), up to this.</summary>
    public const int MaxHeadSize = 256;

    /// <summary>Longest sequence (the dropout hash numbers a head's query-key pairs in 32 bits).</summary>
    public const int MaxPositions = 65536;

    private const int Block = 64;     // queries and keys per block: a 64 x 64 fp32 block of weights is 16 KB

    /// <summary>Whether <see cref="Attend"/> takes these projections: CPU, fp32 or bf16, heads a multiple of
    /// 16 wide (and <see cref="TrainingKernels"/> switched on).</summary>
    /// <param name="qkv">c_attn's output (B, T, 3C).</param>
    public static bool Applies(Tensor qkv, long heads) =>
        TrainingKernels.Active && qkv.device_type == DeviceType.CPU && qkv.dtype is ScalarType.Float32 or ScalarType.BFloat16
        && qkv.dim() == 3 && qkv.shape[2] % (3 * heads) == 0 && qkv.shape[2] / (3 * heads) % 16 == 0
        && qkv.shape[2] / (3 * heads) <= MaxHeadSize && qkv.shape[1] <= MaxPositions;

    /// <summary>
    /// Causal attention of each position over itself and the positions before it, every head, with dropout
    /// <paramref name="dropout"/> on the weights; differentiable (autograd calls the backward kernel).
    /// </summary>
    /// <param name="qkv">The query, key and value projections side by side (B, T, 3C), as c_attn writes them.</param>
    /// <param name="heads">Heads (nh); C = nh x hs.</param>
    /// <param name="dropout">Probability of dropping a weight, in [0, 1); 0 for evaluation.</param>
    /// <param name="seed">The dropout mask's seed (see <see cref="Keeps"/>); by default drawn from libtorch's generator,
    /// so manual_seed makes a run repeatable.</param>
    /// <returns>(B, T, C): the heads side by side, in qkv's dtype.</returns>
    public static Tensor Attend(Tensor qkv, int heads, double dropout, ulong? seed = null)
    {
        if (!Applies(qkv, heads))
            throw new ArgumentException($"Projections ({string.Join(", ", qkv.shape)}) {qkv.dtype} on {qkv.device} are not (B, T, 3C) fp32 or bf16 on the CPU with {heads} heads a multiple of 16 wide (up to {MaxHeadSize}) and T up to {MaxPositions}", nameof(qkv));
        if (dropout is < 0 or >= 1 || double.IsNaN(dropout))
            throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "dropout must be in [0, 1)");
        ulong maskSeed = dropout == 0 ? 0 : seed ?? DropoutMask.NewSeed();
        if (!qkv.requires_grad || !is_grad_enabled())
        {
            var (output, logSumExp) = Forward(qkv.contiguous(), heads, dropout, maskSeed); // nothing to differentiate: no autograd node
            logSumExp.Dispose();
            return output;
        }
        return AttentionFunction.apply(qkv.contiguous(), heads, dropout, maskSeed);
    }

    /// <summary>
    /// Whether the weight of query <paramref name="row"/> on <paramref name="key"/> survives dropout in sequence and
    /// head <paramref name="pair"/> (b x nh + h) of a sequence of <paramref name="length"/>: the mask <see cref="Attend"/> uses.
    /// </summary>
    public static bool Keeps(ulong seed, long pair, int row, int key, int length, double dropout) =>
        DropoutMask.Keeps((uint)(row * length + key), PairSeed(seed, pair), DropoutMask.Threshold(dropout));

    private static uint PairSeed(ulong seed, long pair) => (uint)new SplitMix64(seed ^ ((ulong)pair * 0xD1B54A32D192ED03UL)).NextUInt64();

    private sealed class AttentionFunction : autograd.SingleTensorFunction<AttentionFunction>
    {
        public override string Name => nameof(CausalAttention);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var qkv = (Tensor)vars[0];
            int heads = (int)vars[1];
            double dropout = (double)vars[2];
            ulong seed = (ulong)vars[3];
            var (output, logSumExp) = Forward(qkv, heads, dropout, seed);
            // The output is saved as a detached alias: saving the function's own output would tie it to its node in a cycle.
            ctx.save_for_backward([qkv, output.detach(), logSumExp]);
            ctx.save_data("heads", heads);
            ctx.save_data("dropout", dropout);
            ctx.save_data("seed", seed);
            return output;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
        {
            var saved = ctx.get_saved_variables();
            var qkvGrad = Backward(saved[0], saved[1], saved[2], grad_output.contiguous(),
                (int)ctx.get_data("heads"), (double)ctx.get_data("dropout"), (ulong)ctx.get_data("seed"));
            return [qkvGrad, null!, null!, null!];
        }
    }

    /// <summary>The layout of one call: where each head's queries, keys and values sit in qkv's rows.</summary>
    private readonly record struct Shape(int Sequences, int Length, int Heads, int HeadSize, bool Bf16)
    {
        public int Width => Heads * HeadSize;                       // C
        public int Padded => (Length + Block - 1) / Block * Block;  // T rounded up to whole blocks
        public int Blocks => Padded / Block;
        public int Pairs => Sequences * Heads;
        public int ElementSize => Bf16 ? 2 : 4;

        public static Shape Of(Tensor qkv, int heads) => new(
            (int)qkv.shape[0], (int)qkv.shape[1], heads, (int)(qkv.shape[2] / (3 * heads)), qkv.dtype == ScalarType.BFloat16);
    }

    internal static (Tensor Output, Tensor LogSumExp) Forward(Tensor qkv, int heads, double dropout, ulong seed)
    {
        var shape = Shape.Of(qkv, heads);
        var output = empty([shape.Sequences, shape.Length, shape.Width], qkv.dtype);          // (B, T, C)
        var logSumExp = empty([shape.Sequences, heads, shape.Length], ScalarType.Float32);    // (B, nh, T)
        if (shape.Length == 0) return (output, logSumExp);
        nint source = TensorMemory.Address(qkv), target = TensorMemory.Address(output), lse = TensorMemory.Address(logSumExp);
        OpenMp.ForEachThread((part, parts) =>
        {
            using var scratch = new Scratch(shape);
            for (int pair = part; pair < shape.Pairs; pair += parts)
            {
                switch (Simd.Width)
                {
                    case 512: ForwardPair<Floats512>(shape, pair, (byte*)source, (byte*)target, (float*)lse, dropout, seed, scratch); break;
                    case 256: ForwardPair<Floats256>(shape, pair, (byte*)source, (byte*)target, (float*)lse, dropout, seed, scratch); break;
                    default: ForwardPair<Floats128>(shape, pair, (byte*)source, (byte*)target, (float*)lse, dropout, seed, scratch); break;
                }
            }
        }, Math.Min(shape.Pairs, get_num_threads()));
        return (output, logSumExp);
    }

    internal static Tensor Backward(Tensor qkv, Tensor output, Tensor logSumExp, Tensor outputGrad, int heads, double dropout, ulong seed)
    {
        var shape = Shape.Of(qkv, heads);
        var qkvGrad = empty_like(qkv); // every element is written: each head's query, key and value columns, every position
        if (shape.Length == 0) return qkvGrad;
        if (outputGrad.dtype != qkv.dtype) outputGrad = outputGrad.to(qkv.dtype);
        nint source = TensorMemory.Address(qkv), o = TensorMemory.Address(output), lse = TensorMemory.Address(logSumExp), dOut = TensorMemory.Address(outputGrad), dQkv = TensorMemory.Address(qkvGrad);
        OpenMp.ForEachThread((part, parts) =>
        {
            using var scratch = new Scratch(shape);
            for (int pair = part; pair < shape.Pairs; pair += parts)
            {
                switch (Simd.Width)
                {
                    case 512: BackwardPair<Floats512>(shape, pair, (byte*)source, (byte*)o, (float*)lse, (byte*)dOut, (byte*)dQkv, dropout, seed, scratch); break;
                    case 256: BackwardPair<Floats256>(shape, pair, (byte*)source, (byte*)o, (float*)lse, (byte*)dOut, (byte*)dQkv, dropout, seed, scratch); break;
                    default: BackwardPair<Floats128>(shape, pair, (byte*)source, (byte*)o, (float*)lse, (byte*)dOut, (byte*)dQkv, dropout, seed, scratch); break;
                }
            }
        }, Math.Min(shape.Pairs, get_num_threads()));
        GC.KeepAlive(output);
        return qkvGrad;
    }

    /// <summary>One thread's fp32 working memory, 64-byte aligned.</summary>
    private sealed class Scratch : IDisposable
    {
        public readonly float* Queries, Keys, KeysT, Values, ValuesT, OutGrad, Acc, KeyGrad, ValueGrad, Weights, Grads;
        public readonly float* RowStats, RowStats2; // per position: the running maximum and sum (forward); log-sum-exp and dO . O (backward)
        private readonly float* _memory;

        public Scratch(Shape s)
        {
            long head = (long)s.Padded * s.HeadSize, block = Block * s.HeadSize, square = Block * Block;
            long total = 6 * head + 3 * block + 2 * square + 2 * s.Padded;
            _memory = (float*)NativeMemory.AlignedAlloc((nuint)(total * sizeof(float)), 64);
            float* p = _memory;
            float* Take(long n) { var r = p; p += n; return r; }
            Queries = Take(head); Keys = Take(head); KeysT = Take(head); Values = Take(head); ValuesT = Take(head); OutGrad = Take(head);
            Acc = Take(block); KeyGrad = Take(block); ValueGrad = Take(block);
            Weights = Take(square); Grads = Take(square);
            RowStats = Take(s.Padded); RowStats2 = Take(s.Padded);
        }

        public void Dispose() => NativeMemory.AlignedFree(_memory);
    }

    /// <summary>Widens (and scales) columns [offset, offset + hs) of T rows into a (T, hs) fp32 block, zeros up to whole blocks.</summary>
    private static void Load<V>(Shape s, byte* rows, long rowStride, int offset, float scale, float* into) where V : unmanaged, IFloatVector<V>
    {
        int hs = s.HeadSize;
        var factor = V.Create(scale);
        for (int t = 0; t < s.Length; t++)
        {
            byte* row = rows + t * rowStride * s.ElementSize;
            for (int d = 0; d < hs; d += V.Count)
            {
                (Bf16.Load<V>(row, offset + d, s.Bf16) * factor).Store(into + (long)t * hs + d);
            }
        }
        new Span<float>(into + (long)s.Length * hs, (s.Padded - s.Length) * hs).Clear();
    }

    /// <summary>(rows, cols) row-major into (cols, rows) row-major.</summary>
    private static void Transpose(float* from, int rows, int cols, float* into)
    {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                into[(long)c * rows + r] = from[(long)r * cols + c];
    }

    /// <summary>Rounds (and scales) a (T, hs) fp32 block into columns [offset, offset + hs) of T rows.</summary>
    private static void Store<V>(Shape s, float* from, float scale, byte* rows, long rowStride, int offset) where V : unmanaged, IFloatVector<V>
    {
        int hs = s.HeadSize;
        var factor = V.Create(scale);
        for (int t = 0; t < s.Length; t++)
        {
            byte* row = rows + t * rowStride * s.ElementSize;
            for (int d = 0; d < hs; d += V.Count)
            {
                Bf16.Store(V.Load(from + (long)t * hs + d) * factor, row, offset + d, s.Bf16);
            }
        }
    }

    private static void ForwardPair<V>(Shape s, int pair, byte* qkv, byte* output, float* logSumExp, double dropout, ulong seed, Scratch w) where V : unmanaged, IFloatVector<V>
    {
        int b = pair / s.Heads, h = pair % s.Heads, hs = s.HeadSize, C = s.Width;
        byte* rows = qkv + (long)b * s.Length * 3 * C * s.ElementSize;
        Load<V>(s, rows, 3 * C, h * hs, 1f / MathF.Sqrt(hs), w.Queries);
        Load<V>(s, rows, 3 * C, C + h * hs, 1f, w.Keys);
        Load<V>(s, rows, 3 * C, 2 * C + h * hs, 1f, w.Values);
        Transpose(w.Keys, s.Padded, hs, w.KeysT);
        uint pairSeed = PairSeed(seed, pair), threshold = DropoutMask.Threshold(dropout);
        float keepScale = (float)(1 / (1 - dropout));
        float* max = w.RowStats, sum = w.RowStats2;
        float* lse = logSumExp + (long)pair * s.Length;

        for (int qb = 0; qb < s.Blocks; qb++)
        {
            int r0 = qb * Block;
            float* q = w.Queries + (long)r0 * hs;
            float* acc = w.Acc;
            new Span<float>(acc, Block * hs).Clear();
            for (int r = 0; r < Block; r++) { max[r] = float.NegativeInfinity; sum[r] = 0; }
            for (int kb = 0; kb <= qb; kb++)
            {
                int k0 = kb * Block;
                Scores<V>(q, w.KeysT + k0, s.Padded, w.Weights, hs);
                for (int r = 0; r < Block; r++)
                {
                    int row = r0 + r;
                    float* weights = w.Weights + r * Block;
                    var top = V.Create(float.NegativeInfinity);
                    for (int v = 0; v < Block; v += V.Count)
                    {
                        var x = V.Load(weights + v);
                        if (kb == qb)
                            x = V.Select(V.IndexAbove(k0 + v, row), V.Create(float.NegativeInfinity), x);
                        x.Store(weights + v);
                        top = V.Max(top, x);
                    }
                    float newMax = MathF.Max(max[r], V.MaxAcross(top));
                    float rescale = MathF.Exp(max[r] - newMax); // 0 on the first block (max was -inf)
                    var shift = V.Create(newMax);
                    var total = V.Zero;
                    for (int v = 0; v < Block; v += V.Count)
                    {
                        var p = FastExp.Of(V.Load(weights + v) - shift);
                        total += p;
                        if (threshold != 0)
                            p = V.Select(DropoutMask.KeepLanes<V>((uint)(row * s.Length + k0 + v), pairSeed, threshold), p * V.Create(keepScale), V.Zero);
                        p.Store(weights + v);
                    }
                    sum[r] = sum[r] * rescale + V.Sum(total);
                    max[r] = newMax;
                    if (rescale != 1f)
                    {
                        var f = V.Create(rescale);
                        for (int d = 0; d < hs; d += V.Count)
                            (V.Load(acc + r * hs + d) * f).Store(acc + r * hs + d);
                    }
                }
                Accumulate<V>(w.Weights, 1, Block, w.Values + (long)k0 * hs, acc, hs);
            }
            for (int r = 0; r < Block && r0 + r < s.Length; r++)
            {
                var f = V.Create(1f / sum[r]);
                for (int d = 0; d < hs; d += V.Count)
                    (V.Load(acc + r * hs + d) * f).Store(acc + r * hs + d);
                lse[r0 + r] = max[r] + MathF.Log(sum[r]);
            }
            int rowsHere = Math.Min(Block, s.Length - r0);
            Store<V>(s with { Length = rowsHere }, acc, 1f, output + ((long)b * s.Length + r0) * C * s.ElementSize, C, h * hs);
        }
    }

    private static void BackwardPair<V>(Shape s, int pair, byte* qkv, byte* output, float* logSumExp, byte* outputGrad, byte* qkvGrad, double dropout, ulong seed, Scratch w) where V : unmanaged, IFloatVector<V>
    {
        int b = pair / s.Heads, h = pair % s.Heads, hs = s.HeadSize, C = s.Width;
        float scale = 1f / MathF.Sqrt(hs);
        long sequence = (long)b * s.Length;
        byte* rows = qkv + sequence * 3 * C * s.ElementSize;
        Load<V>(s, rows, 3 * C, h * hs, scale, w.Queries);
        Load<V>(s, rows, 3 * C, C + h * hs, 1f, w.Keys);
        Load<V>(s, rows, 3 * C, 2 * C + h * hs, 1f, w.Values);
        Load<V>(s, outputGrad + sequence * C * s.ElementSize, C, h * hs, 1f, w.OutGrad);
        Transpose(w.Keys, s.Padded, hs, w.KeysT);
        Transpose(w.Values, s.Padded, hs, w.ValuesT);
        // Per row: its log-sum-exp (+inf past T, so padded rows' weights are 0) and D = dO . O, the softmax backward's term.
        float* lse = w.RowStats, dot = w.RowStats2;
        float* pairLse = logSumExp + (long)pair * s.Length;
        byte* outRows = output + sequence * C * s.ElementSize;
        for (int t = 0; t < s.Padded; t++)
        {
            if (t >= s.Length) { lse[t] = float.PositiveInfinity; dot[t] = 0; continue; }
            lse[t] = pairLse[t];
            byte* row = outRows + (long)t * C * s.ElementSize;
            var total = V.Zero;
            for (int d = 0; d < hs; d += V.Count)
            {
                total += Bf16.Load<V>(row, h * hs + d, s.Bf16) * V.Load(w.OutGrad + (long)t * hs + d);
            }
            dot[t] = V.Sum(total);
        }
        // The queries' gradient accumulates over all key blocks: it lives in the Values block once those are transposed.
        float* queryGrad = w.Values;
        new Span<float>(queryGrad, s.Padded * hs).Clear();
        uint pairSeed = PairSeed(seed, pair), threshold = DropoutMask.Threshold(dropout);
        float keepScale = (float)(1 / (1 - dropout));

        for (int kb = 0; kb < s.Blocks; kb++)
        {
            int k0 = kb * Block;
            new Span<float>(w.KeyGrad, Block * hs).Clear();
            new Span<float>(w.ValueGrad, Block * hs).Clear();
            for (int qb = kb; qb < s.Blocks; qb++)
            {
                int r0 = qb * Block;
                float* q = w.Queries + (long)r0 * hs, dO = w.OutGrad + (long)r0 * hs;
                Scores<V>(q, w.KeysT + k0, s.Padded, w.Weights, hs);   // S (queries, keys)
                Scores<V>(dO, w.ValuesT + k0, s.Padded, w.Grads, hs);  // dO V^T: the dropped weights' gradient
                for (int r = 0; r < Block; r++)
                {
                    int row = r0 + r;
                    float* weights = w.Weights + r * Block, grads = w.Grads + r * Block;
                    var shift = V.Create(lse[row]);
                    var d = V.Create(dot[row]);
                    for (int v = 0; v < Block; v += V.Count)
                    {
                        var p = FastExp.Of(V.Load(weights + v) - shift);
                        if (kb == qb)
                            p = V.Select(V.IndexAbove(k0 + v, row), V.Zero, p);
                        var g = V.Load(grads + v);
                        var dropped = p;
                        if (threshold != 0)
                        {
                            var keep = DropoutMask.KeepLanes<V>((uint)(row * s.Length + k0 + v), pairSeed, threshold);
                            var k = V.Create(keepScale);
                            dropped = V.Select(keep, p * k, V.Zero);
                            g = V.Select(keep, g * k, V.Zero);
                        }
                        dropped.Store(weights + v);     // P after dropout, for dV
                        (p * (g - d)).Store(grads + v); // dS = P (dP - D)
                    }
                }
                Accumulate<V>(w.Weights, Block, 1, dO, w.ValueGrad, hs);       // dV += P_dropped^T dO (P read down its columns)
                Accumulate<V>(w.Grads, 1, Block, w.Keys + (long)k0 * hs, queryGrad + (long)r0 * hs, hs); // dQ += dS K (scaled at the end)
                Accumulate<V>(w.Grads, Block, 1, q, w.KeyGrad, hs);              // dK += dS^T (Q / sqrt(hs))
            }
            int keysHere = Math.Min(Block, s.Length - k0);
            byte* gradRows = qkvGrad + (sequence + k0) * 3 * C * s.ElementSize;
            Store<V>(s with { Length = keysHere }, w.KeyGrad, 1f, gradRows, 3 * C, C + h * hs);
            Store<V>(s with { Length = keysHere }, w.ValueGrad, 1f, gradRows, 3 * C, 2 * C + h * hs);
        }
        Store<V>(s, queryGrad, scale, qkvGrad + sequence * 3 * C * s.ElementSize, 3 * C, h * hs);
    }

    /// <summary>S (64, 64) = A (64 rows, hs) @ Bt (hs, 64 of a row stride <paramref name="stride"/>), in tiles of rows x 4
    /// vectors.</summary>
    private static void Scores<V>(float* a, float* bt, int stride, float* s, int hs) where V : unmanaged, IFloatVector<V>
    {
        int n = V.Count;
        for (int r = 0; r < Block; r += RowsPerTile<V>())
        {
            float* a0 = a + r * hs, a1 = a0 + hs, a2 = a1 + hs, a3 = a2 + hs;
            for (int c = 0; c < Block; c += 4 * n)
            {
                V c00 = V.Zero, c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
                V c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
                for (int d = 0; d < hs; d++)
                {
                    float* row = bt + (long)d * stride + c;
                    var b0 = V.Load(row); var b1 = V.Load(row + n); var b2 = V.Load(row + 2 * n); var b3 = V.Load(row + 3 * n);
                    var x = V.Create(a0[d]);
                    c00 = V.MultiplyAdd(x, b0, c00); c01 = V.MultiplyAdd(x, b1, c01); c02 = V.MultiplyAdd(x, b2, c02); c03 = V.MultiplyAdd(x, b3, c03);
                    x = V.Create(a1[d]);
                    c10 = V.MultiplyAdd(x, b0, c10); c11 = V.MultiplyAdd(x, b1, c11); c12 = V.MultiplyAdd(x, b2, c12); c13 = V.MultiplyAdd(x, b3, c13);
                    if (RowsPerTile<V>() == 4)
                    {
                        x = V.Create(a2[d]);
                        c20 = V.MultiplyAdd(x, b0, c20); c21 = V.MultiplyAdd(x, b1, c21); c22 = V.MultiplyAdd(x, b2, c22); c23 = V.MultiplyAdd(x, b3, c23);
                        x = V.Create(a3[d]);
                        c30 = V.MultiplyAdd(x, b0, c30); c31 = V.MultiplyAdd(x, b1, c31); c32 = V.MultiplyAdd(x, b2, c32); c33 = V.MultiplyAdd(x, b3, c33);
                    }
                }
                float* o = s + r * Block + c;
                c00.Store(o); c01.Store(o + n); c02.Store(o + 2 * n); c03.Store(o + 3 * n); o += Block;
                c10.Store(o); c11.Store(o + n); c12.Store(o + 2 * n); c13.Store(o + 3 * n); o += Block;
                if (RowsPerTile<V>() == 4)
                {
                    c20.Store(o); c21.Store(o + n); c22.Store(o + 2 * n); c23.Store(o + 3 * n); o += Block;
                    c30.Store(o); c31.Store(o + n); c32.Store(o + 2 * n); c33.Store(o + 3 * n);
                }
            }
        }
    }

    /// <summary>Rows of a register tile: 4 rows x 4 accumulators (+ 4 operands) fit 32 vector registers; with 16
    /// (AVX2, SSE) 2 rows do, as 4 would spill accumulators to the stack on every step.</summary>
    private static int RowsPerTile<V>() where V : unmanaged, IFloatVector<V> => V.Registers >= 32 ? 4 : 2;

    /// <summary>Out (64, hs) += X (64, 64) @ Y (64 rows, hs), where X[r, k] is x[r * rowStep + k * kStep]: (rowStep, kStep)
    /// = (64, 1) reads a row-major block as it is, (1, 64) reads it transposed, so no transposed copy is made.</summary>
    private static void Accumulate<V>(float* x, int kStep, int rowStep, float* y, float* o, int hs) where V : unmanaged, IFloatVector<V>
    {
        int n = V.Count;
        bool four = RowsPerTile<V>() == 4;
        for (int r = 0; r < Block; r += RowsPerTile<V>())
        {
            float* x0 = x + r * rowStep, x1 = x0 + rowStep, x2 = x1 + rowStep, x3 = x2 + rowStep;
            float* o0 = o + (long)r * hs, o1 = o0 + hs, o2 = o1 + hs, o3 = o2 + hs;
            int c = 0;
            for (; c + 4 * n <= hs; c += 4 * n)
            {
                V c00 = V.Load(o0 + c), c01 = V.Load(o0 + c + n), c02 = V.Load(o0 + c + 2 * n), c03 = V.Load(o0 + c + 3 * n);
                V c10 = V.Load(o1 + c), c11 = V.Load(o1 + c + n), c12 = V.Load(o1 + c + 2 * n), c13 = V.Load(o1 + c + 3 * n);
                V c20 = V.Zero, c21 = c20, c22 = c20, c23 = c20, c30 = c20, c31 = c20, c32 = c20, c33 = c20;
                if (four)
                {
                    c20 = V.Load(o2 + c); c21 = V.Load(o2 + c + n); c22 = V.Load(o2 + c + 2 * n); c23 = V.Load(o2 + c + 3 * n);
                    c30 = V.Load(o3 + c); c31 = V.Load(o3 + c + n); c32 = V.Load(o3 + c + 2 * n); c33 = V.Load(o3 + c + 3 * n);
                }
                for (int k = 0; k < Block; k++)
                {
                    float* row = y + (long)k * hs + c;
                    var b0 = V.Load(row); var b1 = V.Load(row + n); var b2 = V.Load(row + 2 * n); var b3 = V.Load(row + 3 * n);
                    var v = V.Create(x0[k * kStep]);
                    c00 = V.MultiplyAdd(v, b0, c00); c01 = V.MultiplyAdd(v, b1, c01); c02 = V.MultiplyAdd(v, b2, c02); c03 = V.MultiplyAdd(v, b3, c03);
                    v = V.Create(x1[k * kStep]);
                    c10 = V.MultiplyAdd(v, b0, c10); c11 = V.MultiplyAdd(v, b1, c11); c12 = V.MultiplyAdd(v, b2, c12); c13 = V.MultiplyAdd(v, b3, c13);
                    if (four)
                    {
                        v = V.Create(x2[k * kStep]);
                        c20 = V.MultiplyAdd(v, b0, c20); c21 = V.MultiplyAdd(v, b1, c21); c22 = V.MultiplyAdd(v, b2, c22); c23 = V.MultiplyAdd(v, b3, c23);
                        v = V.Create(x3[k * kStep]);
                        c30 = V.MultiplyAdd(v, b0, c30); c31 = V.MultiplyAdd(v, b1, c31); c32 = V.MultiplyAdd(v, b2, c32); c33 = V.MultiplyAdd(v, b3, c33);
                    }
                }
                c00.Store(o0 + c); c01.Store(o0 + c + n); c02.Store(o0 + c + 2 * n); c03.Store(o0 + c + 3 * n);
                c10.Store(o1 + c); c11.Store(o1 + c + n); c12.Store(o1 + c + 2 * n); c13.Store(o1 + c + 3 * n);
                if (four)
                {
                    c20.Store(o2 + c); c21.Store(o2 + c + n); c22.Store(o2 + c + 2 * n); c23.Store(o2 + c + 3 * n);
                    c30.Store(o3 + c); c31.Store(o3 + c + n); c32.Store(o3 + c + 2 * n); c33.Store(o3 + c + 3 * n);
                }
            }
            for (; c < hs; c += n) // heads not a multiple of 4 vectors wide: one vector at a time
            {
                V c0 = V.Load(o0 + c), c1 = V.Load(o1 + c), c2 = four ? V.Load(o2 + c) : V.Zero, c3 = four ? V.Load(o3 + c) : V.Zero;
                for (int k = 0; k < Block; k++)
                {
                    var b0 = V.Load(y + (long)k * hs + c);
                    c0 = V.MultiplyAdd(V.Create(x0[k * kStep]), b0, c0);
                    c1 = V.MultiplyAdd(V.Create(x1[k * kStep]), b0, c1);
                    if (four)
                    {
                        c2 = V.MultiplyAdd(V.Create(x2[k * kStep]), b0, c2);
                        c3 = V.MultiplyAdd(V.Create(x3[k * kStep]), b0, c3);
                    }
                }
                c0.Store(o0 + c); c1.Store(o1 + c);
                if (four) { c2.Store(o2 + c); c3.Store(o3 + c); }
            }
        }
    }
}
