using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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

    private static Exception? s_lastFailure;

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
        int failed = 0;
        fixed (int* pp = positions)
        fixed (byte* qp = qkv.bytes)
        fixed (byte* kp = keys.bytes)
        fixed (byte* vp = values.bytes)
        fixed (byte* yp = y.bytes)
        {
            var job = new Job(qp, kp, vp, yp, pp, (int)rows, (int)heads, (int)capacity, (int)hs, qkv.dtype == ScalarType.BFloat16, &failed);
            OpenMp.Parallel(&RunParts, &job, get_num_threads());
        }
        if (failed != 0)
        {
            y.Dispose();
            throw new InvalidOperationException("A part of a decode step's attention failed", s_lastFailure);
        }
        return y;
    }

    /// <summary>One thread's share of the (row, head) pairs, called by the OpenMP runtime on each thread of the team.</summary>
    [UnmanagedCallersOnly]
    private static void RunParts(void* state)
    {
        var job = (Job*)state;
        try
        {
            job->RunPart(OpenMp.ThreadNumber, OpenMp.TeamSize);
        }
        catch (Exception e)
        {
            s_lastFailure = e; // nothing may unwind into native code
            *job->Failed = 1;
        }
    }

    /// <summary>One step of one layer: pointers into memory the caller keeps alive (and fixed) until every part is done.</summary>
    private readonly struct Job(byte* qkv, byte* keys, byte* values, byte* y, int* positions, int rows, int heads, int capacity, int headSize, bool bf16, int* failed)
    {
        public readonly int* Failed = failed; // set to 1 by a part that threw
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
            for (int u = part; u < Rows * Heads; u += parts)
                Head(u / Heads, u % Heads);
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

            var scores = stackalloc float[length];
            for (int j = 0; j < length; j++)
            {
                byte* key = keys + j * rowBytes;
                var sum = Vector512<float>.Zero;
                for (int k = 0; k < chunks; k++)
                    sum = Avx512F.FusedMultiplyAdd(q[k], Load(key, k), sum);
                scores[j] = Vector512.Sum(sum);
            }

            var weights = new Span<float>(scores, length);
            float max = TensorPrimitives.Max(weights);
            TensorPrimitives.Subtract(weights, max, weights);
            TensorPrimitives.Exp(weights, weights);
            float inverse = 1f / TensorPrimitives.Sum(weights);

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

        /// <summary>Elements [16k, 16k + 16) of a row as floats.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private Vector512<float> Load(byte* row, int k) =>
            IsBf16 ? Bf16.Widen((ushort*)row + 16 * k) : Vector512.Load((float*)row + 16 * k);

        /// <summary>Writes elements [16k, 16k + 16) of an output row, a bf16 row rounded to nearest even.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Store(byte* row, int k, Vector512<float> v)
        {
            if (IsBf16)
                Bf16.Narrow(v).Store((ushort*)row + 16 * k);
            else
                v.Store((float*)row + 16 * k);
        }
    }
}
