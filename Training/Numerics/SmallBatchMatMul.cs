using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// y = x W + b for the few rows of a decode step, with W stored [in, out] (Conv1D's layout and the output layer's
/// (C, V) copy), in fp32 or bf16, the columns split over the cores.
/// </summary>
/// <remarks>
/// <para>A decode step with a handful of rows is a chain of matrix-vector products whose cost is reading every weight
/// from memory once (GPT-2 small: 248 MB in bf16, 496 MB in fp32). libtorch's CPU kernels for those shapes stream at
/// ~19 GB/s here, fp32 on one core only; handing each product's halves to two .NET tasks did not pay (the hand-off
/// costs as much as it saves). Here each product's columns are shared out over libtorch's own OpenMP team (see
/// <see cref="OpenMp"/>), whose workers spin between parallel regions, so both cores stream through the whole step
/// beside libtorch's ops: measured here, GPT-2 small's 49
/// products at one row take 8.8-9.9 ms in bf16 (libtorch 12.7-15.9) and 12.9-14.6 ms in fp32 (libtorch 21.1-22.7).</para>
/// <para>Numerics: products accumulate in fp32 in input order, one row at a time, so a row's result does not depend on
/// the other rows in the batch; bf16 results are rounded once, to nearest even, after the bias is added.</para>
/// <para>Used only where it applies (<see cref="Applies(long, ScalarType, Device)"/>): inference (no autograd), CPU, AVX-512, at most
/// <see cref="MaxRows"/> rows. Everything else goes through libtorch.</para>
/// </remarks>
public static unsafe class SmallBatchMatMul
{
    /// <summary>The most rows a product is done here for. With more rows the products stop being bound by reading the
    /// weights, and libtorch's GEMM (bf16 dot-product instructions, which .NET does not expose) catches up: whole decode
    /// steps of GPT-2 small measured here, ours against libtorch's, bf16 28.3 / 31.4 ms at 16 rows, 40.5 / 42.0 at 24,
    /// 51.4 / 48.6 at 32 (fp32 57.7 / 69.2, 82.7 / 86.8, 105.0 / 101.6).</summary>
    public const int MaxRows = 24;

    /// <summary>Columns a tile covers: 4 vectors of 16 floats per row.</summary>
    private const int Tile = 64;

    /// <summary>Rows that share one pass over a weight tile (4 rows x 4 accumulators fill 16 of the 32 vector registers).</summary>
    private const int RowGroup = 4;

    /// <summary>
    /// How many weight rows ahead a tile asks for its cache lines. Consecutive weight rows of a tile lie a whole matrix
    /// row apart (9 KB for GPT-2 small's qkv in fp32), past the 4 KB page the hardware prefetchers keep to, so without
    /// asking, the loop waits on every row's lines in turn.
    /// </summary>
    /// <remarks>32 measured best of 8, 16 and 32 here (GPT-2 small's products at 4 rows: fp32 22.3, 21.8, 19.4 ms; bf16
    /// 11.1, 10.4, 10.0; none 22.9 and 12.5).</remarks>
    private const int PrefetchRows = 32;

    private static Exception? s_lastFailure;

    [ThreadStatic]
    private static float[]? t_inputScratch;

    /// <summary>Whether <see cref="Forward"/> takes <paramref name="rows"/> rows of <paramref name="x"/> times <paramref name="weight"/>.</summary>
    public static bool Applies(long rows, Tensor x, Tensor weight) =>
        x.dtype == weight.dtype && x.device_type == weight.device_type && Applies(rows, x.dtype, x.device);

    /// <summary>Whether products of <paramref name="rows"/> rows in <paramref name="dtype"/> on <paramref name="device"/> are done here.</summary>
    public static bool Applies(long rows, ScalarType dtype, Device device) =>
        DecodeKernels.Active && rows is > 0 and <= MaxRows && device.type == DeviceType.CPU
        && dtype is ScalarType.Float32 or ScalarType.BFloat16 && !is_grad_enabled();

    /// <summary>x W + b.</summary>
    /// <param name="x">Inputs (rows, in), rows at most <see cref="MaxRows"/>.</param>
    /// <param name="weight">Weights (in, out), contiguous, x's dtype.</param>
    /// <param name="bias">Bias (out) in x's dtype, or null.</param>
    /// <returns>(rows, out) in x's dtype.</returns>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.dim() != 2 || weight.dim() != 2 || x.shape[1] != weight.shape[0])
            throw new ArgumentException($"Cannot multiply ({string.Join(", ", x.shape)}) by ({string.Join(", ", weight.shape)})");
        if (x.shape[0] > MaxRows)
            throw new ArgumentOutOfRangeException(nameof(x), x.shape[0], $"at most {MaxRows} rows");
        if (!weight.is_contiguous())
            throw new ArgumentException("The weight must be contiguous", nameof(weight));
        if (bias is not null && (bias.NumberOfElements != weight.shape[1] || !bias.is_contiguous() || bias.dtype != x.dtype))
            throw new ArgumentException($"The bias must be {weight.shape[1]} contiguous values of {x.dtype}", nameof(bias));

        int rows = (int)x.shape[0], inF = (int)x.shape[1], outF = (int)weight.shape[1];
        bool bf16 = x.dtype == ScalarType.BFloat16;
        using var xc = x.is_contiguous() ? null : x.contiguous();
        var input = xc ?? x;
        var y = empty([rows, outF], x.dtype, x.device);

        var scratch = t_inputScratch is { } s && s.Length >= rows * inF ? s : t_inputScratch = new float[Math.Max(rows * inF, 4096)];
        fixed (byte* xp = input.bytes)
        fixed (byte* wp = weight.bytes)
        fixed (byte* bp = bias is null ? default : bias.bytes)
        fixed (byte* yp = y.bytes)
        fixed (float* xs = scratch)
        {
            float* xf = (float*)xp;
            if (bf16)
            {
                var xb = (ushort*)xp;
                for (int i = 0; i < rows * inF; i++)
                    xs[i] = Bf16.ToSingle(xb[i]);
                xf = xs;
            }
            int failed = 0;
            var job = new Job(xf, wp, bias is null ? null : bp, yp, rows, inF, outF, bf16, &failed);
            OpenMp.Parallel(&RunParts, &job, get_num_threads()); // libtorch's intra-op threads, on its own team
            if (failed != 0)
                throw new InvalidOperationException("A part of a matrix product failed", s_lastFailure);
        }
        return y;
    }

    /// <summary>One thread's part of a product, called by the OpenMP runtime on each thread of the team.</summary>
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

    /// <summary>One product: pointers into memory the caller keeps alive (and fixed) until every part is done.</summary>
    private readonly struct Job(float* x, byte* w, byte* bias, byte* y, int rows, int inFeatures, int outFeatures, bool bf16, int* failed)
    {
        public readonly int* Failed = failed; // set to 1 by a part that threw
        private readonly float* X = x;     // (Rows, In) as floats
        private readonly byte* W = w;      // (In, Out)
        private readonly byte* Bias = bias; // (Out) or null
        private readonly byte* Y = y;      // (Rows, Out)
        private readonly int Rows = rows, In = inFeatures, Out = outFeatures;
        private readonly bool IsBf16 = bf16;

        /// <summary>Part <paramref name="part"/> of <paramref name="parts"/>: whole tiles of columns, the last part also the ragged end.</summary>
        public void RunPart(int part, int parts)
        {
            int perPart = (Out + parts - 1) / parts;
            perPart = (perPart + Tile - 1) / Tile * Tile;
            int j0 = part * perPart, j1 = Math.Min(Out, j0 + perPart);
            int j = j0;
            for (; j + Tile <= j1; j += Tile)
            {
                for (int r = 0; r < Rows; r += RowGroup)
                {
                    switch (Math.Min(RowGroup, Rows - r))
                    {
                        case 1: TileOf<One>(r, j); break;
                        case 2: TileOf<Two>(r, j); break;
                        case 3: TileOf<Three>(r, j); break;
                        default: TileOf<Four>(r, j); break;
                    }
                }
            }
            if (j < j1)
                Ragged(j, j1);
        }

        /// <summary>Columns [j, j + 64) of rows [r, r + R).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void TileOf<R>(int r, int j) where R : struct, IRowCount
        {
            var a00 = Vector512<float>.Zero; var a01 = a00; var a02 = a00; var a03 = a00;
            var a10 = a00; var a11 = a00; var a12 = a00; var a13 = a00;
            var a20 = a00; var a21 = a00; var a22 = a00; var a23 = a00;
            var a30 = a00; var a31 = a00; var a32 = a00; var a33 = a00;
            float* x0 = X + (long)r * In, x1 = x0 + In, x2 = x1 + In, x3 = x2 + In;
            int n = In;
            if (IsBf16)
            {
                // 32 bf16 weights per load: each 32-bit lane holds columns 2k (low half) and 2k + 1 (high half), so a
                // shift gives the even columns as floats and a mask the odd ones; they are interleaved back at the end.
                var high = Vector512.Create(0xFFFF0000u);
                ushort* p = (ushort*)W + j;
                long ahead = PrefetchRows * (long)Out;
                for (int i = 0; i < n; i++, p += Out)
                {
                    Sse.Prefetch0(p + ahead);
                    Sse.Prefetch0(p + ahead + 32);
                    var v0 = Vector512.Load((uint*)p);
                    var v1 = Vector512.Load((uint*)(p + 32));
                    var e0 = (v0 << 16).AsSingle(); var o0 = (v0 & high).AsSingle();
                    var e1 = (v1 << 16).AsSingle(); var o1 = (v1 & high).AsSingle();
                    var b0 = Vector512.Create(x0[i]);
                    a00 = Avx512F.FusedMultiplyAdd(e0, b0, a00); a01 = Avx512F.FusedMultiplyAdd(o0, b0, a01);
                    a02 = Avx512F.FusedMultiplyAdd(e1, b0, a02); a03 = Avx512F.FusedMultiplyAdd(o1, b0, a03);
                    if (R.Count > 1)
                    {
                        var b1 = Vector512.Create(x1[i]);
                        a10 = Avx512F.FusedMultiplyAdd(e0, b1, a10); a11 = Avx512F.FusedMultiplyAdd(o0, b1, a11);
                        a12 = Avx512F.FusedMultiplyAdd(e1, b1, a12); a13 = Avx512F.FusedMultiplyAdd(o1, b1, a13);
                    }
                    if (R.Count > 2)
                    {
                        var b2 = Vector512.Create(x2[i]);
                        a20 = Avx512F.FusedMultiplyAdd(e0, b2, a20); a21 = Avx512F.FusedMultiplyAdd(o0, b2, a21);
                        a22 = Avx512F.FusedMultiplyAdd(e1, b2, a22); a23 = Avx512F.FusedMultiplyAdd(o1, b2, a23);
                    }
                    if (R.Count > 3)
                    {
                        var b3 = Vector512.Create(x3[i]);
                        a30 = Avx512F.FusedMultiplyAdd(e0, b3, a30); a31 = Avx512F.FusedMultiplyAdd(o0, b3, a31);
                        a32 = Avx512F.FusedMultiplyAdd(e1, b3, a32); a33 = Avx512F.FusedMultiplyAdd(o1, b3, a33);
                    }
                }
                (a00, a01, a02, a03) = Interleave(a00, a01, a02, a03);
                if (R.Count > 1) (a10, a11, a12, a13) = Interleave(a10, a11, a12, a13);
                if (R.Count > 2) (a20, a21, a22, a23) = Interleave(a20, a21, a22, a23);
                if (R.Count > 3) (a30, a31, a32, a33) = Interleave(a30, a31, a32, a33);
            }
            else
            {
                float* p = (float*)W + j;
                long ahead = PrefetchRows * (long)Out;
                for (int i = 0; i < n; i++, p += Out)
                {
                    Sse.Prefetch0(p + ahead);
                    Sse.Prefetch0(p + ahead + 16);
                    Sse.Prefetch0(p + ahead + 32);
                    Sse.Prefetch0(p + ahead + 48);
                    var w0 = Vector512.Load(p); var w1 = Vector512.Load(p + 16);
                    var w2 = Vector512.Load(p + 32); var w3 = Vector512.Load(p + 48);
                    var b0 = Vector512.Create(x0[i]);
                    a00 = Avx512F.FusedMultiplyAdd(w0, b0, a00); a01 = Avx512F.FusedMultiplyAdd(w1, b0, a01);
                    a02 = Avx512F.FusedMultiplyAdd(w2, b0, a02); a03 = Avx512F.FusedMultiplyAdd(w3, b0, a03);
                    if (R.Count > 1)
                    {
                        var b1 = Vector512.Create(x1[i]);
                        a10 = Avx512F.FusedMultiplyAdd(w0, b1, a10); a11 = Avx512F.FusedMultiplyAdd(w1, b1, a11);
                        a12 = Avx512F.FusedMultiplyAdd(w2, b1, a12); a13 = Avx512F.FusedMultiplyAdd(w3, b1, a13);
                    }
                    if (R.Count > 2)
                    {
                        var b2 = Vector512.Create(x2[i]);
                        a20 = Avx512F.FusedMultiplyAdd(w0, b2, a20); a21 = Avx512F.FusedMultiplyAdd(w1, b2, a21);
                        a22 = Avx512F.FusedMultiplyAdd(w2, b2, a22); a23 = Avx512F.FusedMultiplyAdd(w3, b2, a23);
                    }
                    if (R.Count > 3)
                    {
                        var b3 = Vector512.Create(x3[i]);
                        a30 = Avx512F.FusedMultiplyAdd(w0, b3, a30); a31 = Avx512F.FusedMultiplyAdd(w1, b3, a31);
                        a32 = Avx512F.FusedMultiplyAdd(w2, b3, a32); a33 = Avx512F.FusedMultiplyAdd(w3, b3, a33);
                    }
                }
            }
            Store(r, j, a00, a01, a02, a03);
            if (R.Count > 1) Store(r + 1, j, a10, a11, a12, a13);
            if (R.Count > 2) Store(r + 2, j, a20, a21, a22, a23);
            if (R.Count > 3) Store(r + 3, j, a30, a31, a32, a33);
        }

        /// <summary>Even and odd columns (e0, o0: columns 0-31; e1, o1: 32-63) back in column order, 16 per vector.</summary>
        private static (Vector512<float>, Vector512<float>, Vector512<float>, Vector512<float>) Interleave(
            Vector512<float> e0, Vector512<float> o0, Vector512<float> e1, Vector512<float> o1)
        {
            var low = Vector512.Create(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            var high = Vector512.Create(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            return (Avx512F.PermuteVar16x32x2(e0, low, o0), Avx512F.PermuteVar16x32x2(e0, high, o0),
                Avx512F.PermuteVar16x32x2(e1, low, o1), Avx512F.PermuteVar16x32x2(e1, high, o1));
        }

        /// <summary>Adds the bias to columns [j, j + 64) of row r and writes them in the output's dtype.</summary>
        private void Store(int r, int j, Vector512<float> c0, Vector512<float> c1, Vector512<float> c2, Vector512<float> c3)
        {
            long at = (long)r * Out + j;
            if (IsBf16)
            {
                if (Bias is not null)
                {
                    var b = (ushort*)Bias + j;
                    c0 += Bf16.Widen(b); c1 += Bf16.Widen(b + 16); c2 += Bf16.Widen(b + 32); c3 += Bf16.Widen(b + 48);
                }
                var y = (ushort*)Y + at;
                Bf16.Narrow(c0).Store(y); Bf16.Narrow(c1).Store(y + 16); Bf16.Narrow(c2).Store(y + 32); Bf16.Narrow(c3).Store(y + 48);
            }
            else
            {
                if (Bias is not null)
                {
                    var b = (float*)Bias + j;
                    c0 += Vector512.Load(b); c1 += Vector512.Load(b + 16); c2 += Vector512.Load(b + 32); c3 += Vector512.Load(b + 48);
                }
                var y = (float*)Y + at;
                c0.Store(y); c1.Store(y + 16); c2.Store(y + 32); c3.Store(y + 48);
            }
        }

        /// <summary>Columns [j0, j1), fewer than a tile, for every row: the ragged end past the last whole tile. Walks the
        /// weights row by row as the tiles do (column by column would miss the cache once per weight).</summary>
        private void Ragged(int j0, int j1)
        {
            int width = j1 - j0;
            Span<float> sums = stackalloc float[MaxRows * Tile];
            sums.Clear();
            for (int i = 0; i < In; i++)
            {
                for (int c = 0; c < width; c++)
                {
                    float w = WeightAt(i, j0 + c);
                    for (int r = 0; r < Rows; r++)
                        sums[r * Tile + c] = MathF.FusedMultiplyAdd(X[(long)r * In + i], w, sums[r * Tile + c]);
                }
            }
            for (int r = 0; r < Rows; r++)
            {
                for (int c = 0; c < width; c++)
                {
                    int j = j0 + c;
                    float sum = sums[r * Tile + c];
                    long at = (long)r * Out + j;
                    if (IsBf16)
                    {
                        if (Bias is not null) sum += Bf16.ToSingle(((ushort*)Bias)[j]);
                        ((ushort*)Y)[at] = Bf16.Round(sum);
                    }
                    else
                    {
                        if (Bias is not null) sum += ((float*)Bias)[j];
                        ((float*)Y)[at] = sum;
                    }
                }
            }
        }

        private float WeightAt(int i, int j) => IsBf16
            ? Bf16.ToSingle(((ushort*)W)[(long)i * Out + j])
            : ((float*)W)[(long)i * Out + j];
    }

    /// <summary>How many rows a tile kernel handles, as a type, so the JIT compiles one kernel per count with the unused rows' code removed.</summary>
    private interface IRowCount { static abstract int Count { get; } }
    private readonly struct One : IRowCount { public static int Count => 1; }
    private readonly struct Two : IRowCount { public static int Count => 2; }
    private readonly struct Three : IRowCount { public static int Count => 3; }
    private readonly struct Four : IRowCount { public static int Count => 4; }
}
