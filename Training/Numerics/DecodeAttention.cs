using System.Runtime.CompilerServices;
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

        /// <summary>Row r's head h, at the width the kernels run.</summary>
        private void Head(int r, int h)
        {
            switch (Simd.Width)
            {
                case 512: Head<Floats512>(r, h); break;
                case 256: Head<Floats256>(r, h); break;
                default: Head<Floats128>(r, h); break;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Head<V>(int r, int h) where V : unmanaged, IFloatVector<V>
        {
            int size = IsBf16 ? 2 : 4, c = Heads * Hs, n = V.Count;
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

            // The query as vectors, scaled once here rather than every score.
            var scale = V.Create(1f / MathF.Sqrt(Hs));
            int chunks = Hs / n;
            var q = stackalloc V[chunks];
            for (int k = 0; k < chunks; k++)
                q[k] = Load<V>(query, k) * scale;

            int padded = (length + n - 1) / n * n; // whole vectors, the end padded with -inf (weight 0)
            var scores = stackalloc float[padded];
            int j0 = 0;
            Prefetch(keys, n * rowBytes);
            for (; j0 + n <= length; j0 += n)
            {
                // The next block of keys and this block's values are asked for ahead: a head's keys and values are two runs of
                // a few KB, and the hardware prefetchers, which stop at each 4 KB page, left every run waiting on memory.
                Prefetch(keys + (j0 + n) * rowBytes, n * rowBytes);
                Prefetch(values + j0 * rowBytes, n * rowBytes);
                BlockScores(keys + j0 * rowBytes, rowBytes, q, chunks).Store(scores + j0);
            }
            Prefetch(values + j0 * rowBytes, (length - j0) * rowBytes);
            for (int j = j0; j < length; j++)
            {
                byte* key = keys + j * rowBytes;
                var sum = V.Zero;
                for (int k = 0; k < chunks; k++)
                    sum = V.MultiplyAdd(q[k], Load<V>(key, k), sum);
                scores[j] = V.Sum(sum);
            }

            for (int j = length; j < padded; j++)
                scores[j] = float.NegativeInfinity;
            var top = V.Create(float.NegativeInfinity);
            for (int j = 0; j < padded; j += n)
                top = V.Max(top, V.Load(scores + j));
            var shift = V.Create(V.MaxAcross(top));
            var total = V.Zero;
            for (int j = 0; j < padded; j += n)
            {
                var e = FastExp.Of(V.Load(scores + j) - shift);
                e.Store(scores + j);
                total += e;
            }
            var inverse = V.Create(1f / V.Sum(total));

            for (int k = 0; k < chunks; k++)
            {
                // Four keys at a time into separate sums, so consecutive multiply-adds do not wait on each other.
                var a0 = V.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                int j = 0;
                for (; j + 3 < length; j += 4)
                {
                    byte* value = values + j * rowBytes;
                    a0 = V.MultiplyAdd(V.Create(scores[j]), Load<V>(value, k), a0);
                    a1 = V.MultiplyAdd(V.Create(scores[j + 1]), Load<V>(value + rowBytes, k), a1);
                    a2 = V.MultiplyAdd(V.Create(scores[j + 2]), Load<V>(value + 2 * rowBytes, k), a2);
                    a3 = V.MultiplyAdd(V.Create(scores[j + 3]), Load<V>(value + 3 * rowBytes, k), a3);
                }
                for (; j < length; j++)
                    a0 = V.MultiplyAdd(V.Create(scores[j]), Load<V>(values + j * rowBytes, k), a0);
                Store(output, k, (a0 + a1 + (a2 + a3)) * inverse);
            }
        }

        /// <summary>The query's dot products with V.Count consecutive keys, in order.</summary>
        /// <remarks>Each key's products are summed across its vector at the end, all at once (<see
        /// cref="IFloatVector{TSelf}.SumEach"/>): a third of the shuffles of summing each alone, which had made the scores,
        /// not reading the keys, the kernel's bound in bf16. The accumulators past V.Count are never touched (the JIT drops
        /// their code).</remarks>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private V BlockScores<V>(byte* key, long rowBytes, V* q, int chunks) where V : unmanaged, IFloatVector<V>
        {
            var s0 = V.Zero; var s1 = s0; var s2 = s0; var s3 = s0; var s4 = s0; var s5 = s0; var s6 = s0; var s7 = s0;
            var s8 = s0; var s9 = s0; var s10 = s0; var s11 = s0; var s12 = s0; var s13 = s0; var s14 = s0; var s15 = s0;
            for (int k = 0; k < chunks; k++)
            {
                var qk = q[k];
                s0 = V.MultiplyAdd(qk, Load<V>(key, k), s0);
                s1 = V.MultiplyAdd(qk, Load<V>(key + rowBytes, k), s1);
                s2 = V.MultiplyAdd(qk, Load<V>(key + 2 * rowBytes, k), s2);
                s3 = V.MultiplyAdd(qk, Load<V>(key + 3 * rowBytes, k), s3);
                if (V.Count > 4)
                {
                    s4 = V.MultiplyAdd(qk, Load<V>(key + 4 * rowBytes, k), s4);
                    s5 = V.MultiplyAdd(qk, Load<V>(key + 5 * rowBytes, k), s5);
                    s6 = V.MultiplyAdd(qk, Load<V>(key + 6 * rowBytes, k), s6);
                    s7 = V.MultiplyAdd(qk, Load<V>(key + 7 * rowBytes, k), s7);
                }
                if (V.Count > 8)
                {
                    s8 = V.MultiplyAdd(qk, Load<V>(key + 8 * rowBytes, k), s8);
                    s9 = V.MultiplyAdd(qk, Load<V>(key + 9 * rowBytes, k), s9);
                    s10 = V.MultiplyAdd(qk, Load<V>(key + 10 * rowBytes, k), s10);
                    s11 = V.MultiplyAdd(qk, Load<V>(key + 11 * rowBytes, k), s11);
                    s12 = V.MultiplyAdd(qk, Load<V>(key + 12 * rowBytes, k), s12);
                    s13 = V.MultiplyAdd(qk, Load<V>(key + 13 * rowBytes, k), s13);
                    s14 = V.MultiplyAdd(qk, Load<V>(key + 14 * rowBytes, k), s14);
                    s15 = V.MultiplyAdd(qk, Load<V>(key + 15 * rowBytes, k), s15);
                }
            }
            return V.SumEach(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15);
        }

        /// <summary>Asks for the cache lines of [from, from + bytes).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Prefetch(byte* from, long bytes)
        {
            for (long offset = 0; offset < bytes; offset += 64)
                Simd.Prefetch(from + offset);
        }

        /// <summary>Vector k of a row (elements [kn, kn + n), n = V.Count) as floats.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private V Load<V>(byte* row, int k) where V : unmanaged, IFloatVector<V> => Bf16.Load<V>(row, (long)V.Count * k, IsBf16);

        /// <summary>Writes vector k of an output row, a bf16 row rounded to nearest even.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Store<V>(byte* row, int k, V v) where V : unmanaged, IFloatVector<V> => Bf16.Store(v, row, (long)V.Count * k, IsBf16);
    }
}
