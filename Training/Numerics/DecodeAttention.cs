using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// One decode step's attention: each row's one new query against its own cached keys and values, read in the model's
/// dtype (fp32 or bf16), with the step's new key and value written into the cache on the way. The (row, head) pairs are
/// shared out over libtorch's OpenMP team.
/// </summary>
/// <remarks>
/// <para>Why not libtorch's scaled_dot_product_attention: on CPU it is usable in fp32 only (bf16 measured 6x slower), so
/// a bf16 model's cache held its keys and values widened to fp32, and a step read all of them through two MKL
/// matrix-vector calls per row and head (GPT-2 small at 32 rows: 9,216 calls and, at 96 positions, 226 MB a step, as
/// much as the weights), every row over the longest row's length under a mask. perf put 23% of a concurrency-32
/// serving run's CPU time in those calls. Here a bf16 cache stays bf16 (the keys and values are bf16 values already,
/// so nothing is lost), each row reads only its own positions, and an idle row costs nothing.</para>
/// <para>Numerics: fp32 throughout, q scaled by 1/sqrt(hs) before the dot products, softmax with the row's maximum
/// subtracted, the weighted sum of values divided by the exponentials' sum at the end; a bf16 output is rounded once,
/// to nearest even. A row's result does not depend on the other rows.</para>
/// </remarks>
public static unsafe class DecodeAttention
{
    /// <summary>Head widths this kernel takes: multiples of 16 (one vector of floats), up to this. Every GPT-2 size has 64.</summary>
    public const int MaxHeadSize = 256;

    /// <summary>Positions one row may attend to (its scores live on the stack: 4 KB for GPT-2's 1,024).</summary>
    public const int MaxPositions = 4096;

    /// <summary>Whether a cache of <paramref name="dtype"/> on <paramref name="device"/> with heads of
    /// <paramref name="headSize"/> is read by this kernel, and so should keep the model's dtype.</summary>
    public static bool Reads(ScalarType dtype, Device device, long headSize) =>
        DecodeKernels.Active && device.type == DeviceType.CPU && dtype is ScalarType.Float32 or ScalarType.BFloat16
        && headSize % 16 == 0 && headSize <= MaxHeadSize;

    /// <summary>Whether <see cref="Step"/> runs a step whose projections are <paramref name="qkv"/> over a cache of
    /// <paramref name="cacheDtype"/>: <see cref="Reads"/>, the same dtype, and no autograd (inference only).</summary>
    public static bool Applies(Tensor qkv, ScalarType cacheDtype, long headSize) =>
        qkv.dtype == cacheDtype && Reads(cacheDtype, qkv.device, headSize) && !is_grad_enabled();

    /// <summary>
    /// Writes each row's new key and value at its position and returns its attention over positions [0, position].
    /// </summary>
    /// <param name="qkv">The step's query, key and value projections (R, 3C), c_attn's output, contiguous.</param>
    /// <param name="keys">One layer's cached keys (S, nh, P, hs), contiguous, qkv's dtype, S at least R; row r is slot r.</param>
    /// <param name="values">The layer's cached values, the same shape.</param>
    /// <param name="positions">Per row, where its new key and value go (below P); -1 for a row that sits this step
    /// out: nothing is written for it and its output is zeros.</param>
    /// <returns>(R, C): each row's heads side by side, in qkv's dtype.</returns>
    public static Tensor Step(Tensor qkv, Tensor keys, Tensor values, ReadOnlySpan<int> positions)
    {
        if (keys.dim() != 4 || !keys.shape.SequenceEqual(values.shape))
            throw new ArgumentException($"Keys ({string.Join(", ", keys.shape)}) and values ({string.Join(", ", values.shape)}) must both be (S, nh, P, hs)");
        long slots = keys.shape[0], heads = keys.shape[1], capacity = keys.shape[2], hs = keys.shape[3], c = heads * hs;
        if (qkv.dim() != 2 || qkv.shape[1] != 3 * c)
            throw new ArgumentException($"The projections ({string.Join(", ", qkv.shape)}) must be (R, {3 * c}) for {heads} heads of {hs}", nameof(qkv));
        long rows = qkv.shape[0];
        if (rows > slots || positions.Length != rows)
            throw new ArgumentException($"{rows} rows need {rows} positions and at least {rows} slots (got {positions.Length} and {slots})");
        if (hs % 16 != 0 || hs > MaxHeadSize)
            throw new ArgumentException($"Heads of {hs} are not a multiple of 16 up to {MaxHeadSize}", nameof(keys));
        if (qkv.dtype != keys.dtype || qkv.dtype != values.dtype || qkv.dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new ArgumentException($"Projections, keys and values must share fp32 or bf16 (got {qkv.dtype}, {keys.dtype}, {values.dtype})");
        if (!qkv.is_contiguous() || !keys.is_contiguous() || !values.is_contiguous())
            throw new ArgumentException("Projections, keys and values must be contiguous");
        foreach (int p in positions)
            if (p < -1 || p >= capacity || p >= MaxPositions)
                throw new ArgumentOutOfRangeException(nameof(positions), p, $"a position must be -1 or in [0, {Math.Min(capacity, MaxPositions)})");

        var y = empty([rows, c], qkv.dtype, qkv.device);
        try
        {
            fixed (int* pp = positions)
            fixed (byte* qp = qkv.bytes)
            fixed (byte* kp = keys.bytes)
            fixed (byte* vp = values.bytes)
            fixed (byte* yp = y.bytes)
            {
                var job = new Job(qp, kp, vp, yp, pp, (int)rows, (int)heads, (int)capacity, (int)hs, qkv.dtype == ScalarType.BFloat16);
                OpenMp.ForEachThread((part, parts) => job.RunPart(part, parts), get_num_threads());
            }
        }
        catch
        {
            y.Dispose();
            throw;
        }
        return y;
    }

    /// <summary>One step of one layer: pointers into memory the caller keeps alive (and fixed) until every part is done.</summary>
    private readonly struct Job(byte* qkv, byte* keys, byte* values, byte* y, int* positions, int rows, int heads, int capacity, int headSize, bool bf16)
    {
        private readonly byte* Qkv = qkv;     // (R, 3C)
        private readonly byte* Keys = keys;   // (S, nh, P, hs)
        private readonly byte* Values = values;
        private readonly byte* Y = y;         // (R, C)
        private readonly int* Positions = positions; // (R)
        private readonly int Rows = rows, Heads = heads, Capacity = capacity, Hs = headSize;
        private readonly bool IsBf16 = bf16;

        /// <summary>Pairs part, part + parts, ...: every row has the same number of heads, so the parts get even shares
        /// of long and short rows alike.</summary>
        public void RunPart(int part, int parts)
        {
            long rowBytes = (long)Hs * (IsBf16 ? 2 : 4), headBytes = Capacity * rowBytes;
            for (int u = part; u < Rows * Heads; u += parts)
            {
                Prefetch(Keys + (u + parts) * headBytes, 16 * rowBytes); // the next pair's first keys, while this one runs
                Head(u / Heads, u % Heads);
            }
        }

        /// <summary>Row r's head h.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Head(int r, int h)
        {
            int size = IsBf16 ? 2 : 4, c = Heads * Hs;
            long rowBytes = (long)Hs * size;
            byte* output = Y + ((long)r * c + (long)h * Hs) * size;
            int position = Positions[r];
            if (position < 0)
            {
                new Span<byte>(output, (int)rowBytes).Clear();
                return;
            }

            byte* query = Qkv + ((long)r * 3 * c + (long)h * Hs) * size;
            long head = ((long)r * Heads + h) * Capacity * rowBytes;
            byte* keys = Keys + head, values = Values + head;
            Buffer.MemoryCopy(query + (long)c * size, keys + position * rowBytes, rowBytes, rowBytes);
            Buffer.MemoryCopy(query + 2L * c * size, values + position * rowBytes, rowBytes, rowBytes);
            int length = position + 1;

            // The query as vectors of 16 floats, scaled once here rather than every score.
            float scale = 1f / MathF.Sqrt(Hs);
            int chunks = Hs / 16;
            var q = stackalloc Vector512<float>[chunks];
            for (int k = 0; k < chunks; k++)
                q[k] = Load(query, k) * scale;

            int padded = (length + 15) & ~15; // whole vectors, the end padded with -inf (weight 0)
            var scores = stackalloc float[padded];
            int j16 = 0;
            Prefetch(keys, 16 * rowBytes);
            for (; j16 + 16 <= length; j16 += 16)
            {
                // The next block of keys and this block's values are asked for ahead: a head's keys and values are two runs of
                // a few KB, and the hardware prefetchers, which stop at each 4 KB page, left every run waiting on memory.
                Prefetch(keys + (j16 + 16) * rowBytes, 16 * rowBytes);
                Prefetch(values + j16 * rowBytes, 16 * rowBytes);
                SixteenScores(keys + j16 * rowBytes, rowBytes, q, chunks).Store(scores + j16);
            }
            Prefetch(values + j16 * rowBytes, (length - j16) * rowBytes);
            for (int j = j16; j < length; j++)
            {
                byte* key = keys + j * rowBytes;
                var sum = Vector512<float>.Zero;
                for (int k = 0; k < chunks; k++)
                    sum = Avx512F.FusedMultiplyAdd(q[k], Load(key, k), sum);
                scores[j] = Vector512.Sum(sum);
            }

            for (int j = length; j < padded; j++)
                scores[j] = float.NegativeInfinity;
            var top = Vector512.Create(float.NegativeInfinity);
            for (int j = 0; j < padded; j += 16)
                top = Vector512.Max(top, Vector512.Load(scores + j));
            float max = Horizontal.Max(top);
            var shift = Vector512.Create(max);
            var total = Vector512<float>.Zero;
            for (int j = 0; j < padded; j += 16)
            {
                var e = Vector512.Exp(Vector512.Load(scores + j) - shift);
                e.Store(scores + j);
                total += e;
            }
            float inverse = 1f / Vector512.Sum(total);

            for (int k = 0; k < chunks; k++)
            {
                // Four keys at a time into separate sums, so consecutive multiply-adds do not wait on each other.
                var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                int j = 0;
                for (; j + 3 < length; j += 4)
                {
                    byte* value = values + j * rowBytes;
                    a0 = Avx512F.FusedMultiplyAdd(Vector512.Create(scores[j]), Load(value, k), a0);
                    a1 = Avx512F.FusedMultiplyAdd(Vector512.Create(scores[j + 1]), Load(value + rowBytes, k), a1);
                    a2 = Avx512F.FusedMultiplyAdd(Vector512.Create(scores[j + 2]), Load(value + 2 * rowBytes, k), a2);
                    a3 = Avx512F.FusedMultiplyAdd(Vector512.Create(scores[j + 3]), Load(value + 3 * rowBytes, k), a3);
                }
                for (; j < length; j++)
                    a0 = Avx512F.FusedMultiplyAdd(Vector512.Create(scores[j]), Load(values + j * rowBytes, k), a0);
                Store(output, k, (a0 + a1 + (a2 + a3)) * inverse);
            }
        }

        /// <summary>The query's dot products with 16 consecutive keys, in order.</summary>
        /// <remarks>Each key's products are summed across its vector at the end; summing 16 vectors at once (a transpose as
        /// it adds, 45 shuffles and adds) costs a third of summing each alone, which had made the scores, not reading the
        /// keys, the kernel's bound in bf16.</remarks>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private Vector512<float> SixteenScores(byte* key, long rowBytes, Vector512<float>* q, int chunks)
        {
            var s0 = Vector512<float>.Zero; var s1 = s0; var s2 = s0; var s3 = s0; var s4 = s0; var s5 = s0; var s6 = s0; var s7 = s0;
            var s8 = s0; var s9 = s0; var s10 = s0; var s11 = s0; var s12 = s0; var s13 = s0; var s14 = s0; var s15 = s0;
            for (int k = 0; k < chunks; k++)
            {
                var qk = q[k];
                s0 = Avx512F.FusedMultiplyAdd(qk, Load(key, k), s0);
                s1 = Avx512F.FusedMultiplyAdd(qk, Load(key + rowBytes, k), s1);
                s2 = Avx512F.FusedMultiplyAdd(qk, Load(key + 2 * rowBytes, k), s2);
                s3 = Avx512F.FusedMultiplyAdd(qk, Load(key + 3 * rowBytes, k), s3);
                s4 = Avx512F.FusedMultiplyAdd(qk, Load(key + 4 * rowBytes, k), s4);
                s5 = Avx512F.FusedMultiplyAdd(qk, Load(key + 5 * rowBytes, k), s5);
                s6 = Avx512F.FusedMultiplyAdd(qk, Load(key + 6 * rowBytes, k), s6);
                s7 = Avx512F.FusedMultiplyAdd(qk, Load(key + 7 * rowBytes, k), s7);
                s8 = Avx512F.FusedMultiplyAdd(qk, Load(key + 8 * rowBytes, k), s8);
                s9 = Avx512F.FusedMultiplyAdd(qk, Load(key + 9 * rowBytes, k), s9);
                s10 = Avx512F.FusedMultiplyAdd(qk, Load(key + 10 * rowBytes, k), s10);
                s11 = Avx512F.FusedMultiplyAdd(qk, Load(key + 11 * rowBytes, k), s11);
                s12 = Avx512F.FusedMultiplyAdd(qk, Load(key + 12 * rowBytes, k), s12);
                s13 = Avx512F.FusedMultiplyAdd(qk, Load(key + 13 * rowBytes, k), s13);
                s14 = Avx512F.FusedMultiplyAdd(qk, Load(key + 14 * rowBytes, k), s14);
                s15 = Avx512F.FusedMultiplyAdd(qk, Load(key + 15 * rowBytes, k), s15);
            }
            // Per 128-bit lane: pairs, then quads of keys; then across the four lanes.
            var a = Quad(Pair(s0, s1), Pair(s2, s3));     // lane l: keys 0-3 summed over the lane's 4 elements
            var b = Quad(Pair(s4, s5), Pair(s6, s7));
            var c = Quad(Pair(s8, s9), Pair(s10, s11));
            var d = Quad(Pair(s12, s13), Pair(s14, s15));
            return Lanes(Lanes(a, b), Lanes(c, d));
        }

        /// <summary>Per 128-bit lane, [x0 + x2, y0 + y2, x1 + x3, y1 + y3].</summary>
        private static Vector512<float> Pair(Vector512<float> x, Vector512<float> y) => Avx512F.UnpackLow(x, y) + Avx512F.UnpackHigh(x, y);

        /// <summary>Per 128-bit lane, from two <see cref="Pair"/>s of (x, y) and (z, w): [sum x, sum y, sum z, sum w].</summary>
        private static Vector512<float> Quad(Vector512<float> xy, Vector512<float> zw) =>
            Avx512F.UnpackLow(xy.AsDouble(), zw.AsDouble()).AsSingle() + Avx512F.UnpackHigh(xy.AsDouble(), zw.AsDouble()).AsSingle();

        /// <summary>[x.L0 + x.L1, x.L2 + x.L3, y.L0 + y.L1, y.L2 + y.L3] over 128-bit lanes L.</summary>
        private static Vector512<float> Lanes(Vector512<float> x, Vector512<float> y) =>
            Avx512F.Shuffle4x128(x, y, 0b10_00_10_00) + Avx512F.Shuffle4x128(x, y, 0b11_01_11_01);

        /// <summary>Asks for the cache lines of [from, from + bytes).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Prefetch(byte* from, long bytes)
        {
            for (long offset = 0; offset < bytes; offset += 64)
                Sse.Prefetch0(from + offset);
        }

        /// <summary>Elements [16k, 16k + 16) of a row as floats.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private Vector512<float> Load(byte* row, int k) => Bf16.Load(row, 16 * k, IsBf16);

        /// <summary>Writes elements [16k, 16k + 16) of an output row, a bf16 row rounded to nearest even.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Store(byte* row, int k, Vector512<float> v) => Bf16.Store(v, row, 16 * k, IsBf16);
    }
}
