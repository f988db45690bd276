using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using OrleansGpt.Training.Model;
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
/// <para>Used only where it applies (<see cref="Applies(long, ScalarType, Device)"/>): inference (no autograd), CPU, at most
/// <see cref="MaxRows"/> rows (24 or 64, by CPU). Everything else goes through libtorch.</para>
/// </remarks>
public static unsafe class SmallBatchMatMul
{
    /// <summary>
    /// The most rows a product of <paramref name="dtype"/> is done here for on this CPU. With more rows the products
    /// stop being bound by reading the weights and a GEMM that blocks for reuse catches up. On AVX-512 with bf16
    /// dot-product instructions libtorch's did at ~32 rows: whole decode steps of GPT-2 small, ours against libtorch's,
    /// bf16 28.3 / 31.4 ms at 16 rows, 40.5 / 42.0 at 24, 51.4 / 48.6 at 32 (fp32 57.7 / 69.2, 82.7 / 86.8, 105.0 /
    /// 101.6). Where libtorch would emulate bf16 (no bf16 instructions) the other path widens every weight each step,
    /// and on AVX2 libtorch's fp32 GEMM stays behind: on a Zen 3 (AVX2) host, decode tok/s ours against libtorch's, bf16
    /// 372 / 152 at 32 rows and 392 / 278 at 64, fp32 333 / 226 and 361 / 269.
    /// </summary>
    public static int MaxRows(ScalarType dtype) =>
        Simd.Width >= 512 && (dtype != ScalarType.BFloat16 || PrecisionSupport.CpuHasNativeBf16) ? 24 : MostRows;

    /// <summary>The row limits on this CPU, for help texts: "24 rows in fp32 and 64 in bf16".</summary>
    public static string MaxRowsText =>
        $"{MaxRows(ScalarType.Float32)} rows in fp32 and {MaxRows(ScalarType.BFloat16)} in bf16 on this CPU";

    /// <summary>The most rows <see cref="MaxRows"/> gives on any CPU (the ragged end's stack buffer is sized by it).</summary>
    public const int MostRows = 64;

    /// <summary>The widest tile (4 vectors of 16 floats); the ragged end past the last whole tile is at most this.</summary>
    private const int Tile = 64;

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

    /// <summary>Whether <see cref="Forward(Tensor, Tensor, Tensor?)"/> takes <paramref name="rows"/> rows of <paramref name="x"/> times <paramref name="weight"/>.</summary>
    public static bool Applies(long rows, Tensor x, Tensor weight) =>
        x.dtype == weight.dtype && x.device_type == weight.device_type && Applies(rows, x.dtype, x.device);

    /// <summary>Whether products of <paramref name="rows"/> rows in <paramref name="dtype"/> on <paramref name="device"/> are done here.</summary>
    public static bool Applies(long rows, ScalarType dtype, Device device) =>
        DecodeKernels.Active && rows > 0 && rows <= MaxRows(dtype) && device.type == DeviceType.CPU
        && dtype is ScalarType.Float32 or ScalarType.BFloat16 && !is_grad_enabled();

    /// <summary>x W + b over a weight in its (in, out) layout.</summary>
    /// <param name="x">Inputs (rows, in), rows at most <see cref="MaxRows"/> of its dtype.</param>
    /// <param name="weight">Weights (in, out), contiguous, x's dtype.</param>
    /// <param name="bias">Bias (out) in x's dtype, or null.</param>
    /// <returns>(rows, out) in x's dtype.</returns>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        if (weight.dim() != 2 || x.dim() != 2 || x.shape[1] != weight.shape[0])
            throw new ArgumentException($"Cannot multiply ({string.Join(", ", x.shape)}) by ({string.Join(", ", weight.shape)})");
        if (!weight.is_contiguous())
            throw new ArgumentException("The weight must be contiguous", nameof(weight));
        if (weight.dtype != x.dtype)
            throw new ArgumentException($"The weight must be {x.dtype}, not {weight.dtype}", nameof(weight));
        return Multiply(x, weight, WeightLayout.InOut(weight.shape[0], weight.shape[1]), bias);
    }

    /// <summary>x W + b over a weight packed in panels (<see cref="PackedWeight"/>): the layout decode steps read.</summary>
    /// <param name="x">Inputs (rows, in), rows at most <see cref="MaxRows"/> of its dtype.</param>
    /// <param name="weight">The packed (in, out) weight, in x's dtype, packed at the width the kernels run now.</param>
    /// <param name="bias">Bias (out) in x's dtype, or null.</param>
    /// <returns>(rows, out) in x's dtype.</returns>
    public static Tensor Forward(Tensor x, PackedWeight weight, Tensor? bias)
    {
        if (x.dim() != 2 || x.shape[1] != weight.In)
            throw new ArgumentException($"Cannot multiply ({string.Join(", ", x.shape)}) by ({weight.In}, {weight.Out})");
        if (weight.Dtype != x.dtype)
            throw new ArgumentException($"The weight must be {x.dtype}, not {weight.Dtype}", nameof(weight));
        if (weight.Panel != PackedWeight.PanelWidth)
            throw new ArgumentException($"The weight was packed in panels of {weight.Panel} columns; the kernels run {PackedWeight.PanelWidth} now", nameof(weight));
        return Multiply(x, weight.Elements, WeightLayout.Panels(weight.In, weight.Out, weight.Panel), bias);
    }

    private static Tensor Multiply(Tensor x, Tensor weight, WeightLayout layout, Tensor? bias)
    {
        if (x.shape[0] > MaxRows(x.dtype))
            throw new ArgumentOutOfRangeException(nameof(x), x.shape[0], $"at most {MaxRows(x.dtype)} rows of {x.dtype} on this CPU");
        if (bias is not null && (bias.NumberOfElements != layout.Out || !bias.is_contiguous() || bias.dtype != x.dtype))
            throw new ArgumentException($"The bias must be {layout.Out} contiguous values of {x.dtype}", nameof(bias));

        int rows = (int)x.shape[0], inF = layout.In, outF = layout.Out;
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
            var job = new Job(xf, wp, layout, bias is null ? null : bp, yp, rows, bf16, &failed);
            OpenMp.Parallel(&RunParts, &job, get_num_threads()); // libtorch's intra-op threads, on its own team
            if (failed != 0)
                throw new InvalidOperationException("A part of a matrix product failed", s_lastFailure);
        }
        return y;
    }

    /// <summary>Where weight (i, j) is: the (in, out) layout, or panels of <see cref="Panel"/> columns each stored
    /// (in, panel), then the columns past the last whole panel as (in, rest) (<see cref="PackedWeight"/>).</summary>
    private readonly struct WeightLayout
    {
        public int In { get; private init; }
        public int Out { get; private init; }
        /// <summary>0 for the (in, out) layout.</summary>
        public int Panel { get; private init; }

        public static WeightLayout InOut(long inF, long outF) => new() { In = checked((int)inF), Out = checked((int)outF) };

        public static WeightLayout Panels(long inF, long outF, int panel) =>
            new() { In = checked((int)inF), Out = checked((int)outF), Panel = panel };

        /// <summary>Elements from one weight row of a tile to the next.</summary>
        public long RowStride
        {
            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            get => Panel == 0 ? Out : Panel;
        }

        /// <summary>Where the tile starting at column <paramref name="j"/> (in a whole panel) starts.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public long TileStart(int j) => Panel == 0 ? j : (long)(j / Panel) * Panel * In;

        /// <summary>Where weight (i, j) is, for columns past the whole tiles.</summary>
        public long IndexOf(int i, int j)
        {
            if (Panel == 0)
                return (long)i * Out + j;
            int full = Out / Panel * Panel;
            return j < full
                ? (long)(j / Panel) * Panel * In + (long)i * Panel + j % Panel
                : (long)full * In + (long)i * (Out - full) + (j - full);
        }
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
    private readonly struct Job(float* x, byte* w, WeightLayout layout, byte* bias, byte* y, int rows, bool bf16, int* failed)
    {
        public readonly int* Failed = failed; // set to 1 by a part that threw
        private readonly float* X = x;     // (Rows, In) as floats
        private readonly byte* W = w;      // (In, Out) in Layout
        private readonly WeightLayout Layout = layout;
        private readonly byte* Bias = bias; // (Out) or null
        private readonly byte* Y = y;      // (Rows, Out)
        private readonly int Rows = rows, In = layout.In, Out = layout.Out;
        private readonly bool IsBf16 = bf16;

        /// <summary>Part <paramref name="part"/> of <paramref name="parts"/>, at the width the kernels run.</summary>
        public void RunPart(int part, int parts)
        {
            switch (Simd.Width)
            {
                case 512: RunPart<Floats512>(part, parts); break;
                case 256: RunPart<Floats256>(part, parts); break;
                default: RunPart<Floats128>(part, parts); break;
            }
        }

        /// <summary>Whole tiles of columns (4 vectors wide), the last part also the ragged end.</summary>
        private void RunPart<V>(int part, int parts) where V : unmanaged, IFloatVector<V>
        {
            int tile = 4 * V.Count;
            // Rows sharing a pass over a tile: 4 rows x 4 accumulators + 4 weight vectors fit 32 registers; with 16
            // (AVX2, SSE) 2 rows do, as 4 would spill accumulators to the stack every weight row.
            int rowGroup = V.Registers >= 32 ? 4 : 2;
            if (Layout.Panel is not 0 and var panel && panel != tile)
                throw new InvalidOperationException($"Weights packed in panels of {panel} columns, tiles of {tile}");
            int tiled = Layout.Panel == 0 ? Out : Out / tile * tile; // packed: the rest past the panels is ragged
            int perPart = (Out + parts - 1) / parts;
            perPart = (perPart + tile - 1) / tile * tile;
            int j0 = part * perPart, j1 = Math.Min(Out, j0 + perPart);
            int j = j0;
            var sums = stackalloc float[16 * V.Count]; // a tile's accumulators, 4 rows of 4 vectors
            for (; j + tile <= Math.Min(j1, tiled); j += tile)
            {
                for (int r = 0; r < Rows; r += rowGroup)
                {
                    switch (Math.Min(rowGroup, Rows - r))
                    {
                        case 1: TileOf<V, One>(r, j, sums); break;
                        case 2: TileOf<V, Two>(r, j, sums); break;
                        case 3: TileOf<V, Three>(r, j, sums); break;
                        default: TileOf<V, Four>(r, j, sums); break;
                    }
                }
            }
            if (j < j1)
                Ragged(j, j1);
        }

        /// <summary>Columns [j, j + 4 V.Count) of rows [r, r + R), through <paramref name="sums"/> (4 x 4 vectors).</summary>
        private void TileOf<V, R>(int r, int j, float* sums) where V : unmanaged, IFloatVector<V> where R : struct, IRowCount
        {
            float* x = X + (long)r * In;
            if (IsBf16)
                SumsBf16<V, R>((ushort*)W + Layout.TileStart(j), Layout.RowStride, x, In, sums);
            else
                SumsFp32<V, R>((float*)W + Layout.TileStart(j), Layout.RowStride, x, In, sums);
            for (int k = 0; k < R.Count; k++)
                Store<V>(r + k, j, sums + 4 * k * V.Count);
        }

        // The two loops below are on their own, without a call or a stackalloc anywhere in the method: with either
        // beside the loop, the JIT kept every accumulator on the stack (a store after each multiply-add and a reload
        // each iteration, seen in its listings), which halved the products of 8 rows here.

        /// <summary>Row k's sums over the tile at <paramref name="p"/> (bf16), as 4 vectors at sums + 4 k n.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void SumsBf16<V, R>(ushort* p, long stride, float* x0, int inF, float* sums)
            where V : unmanaged, IFloatVector<V> where R : struct, IRowCount
        {
            int n = V.Count;
            long ahead = PrefetchRows * stride;
            bool twoLines = 4 * n * sizeof(ushort) > 64; // cache lines of a weight row's bf16 tile
            float* x1 = x0 + inF, x2 = x1 + inF, x3 = x2 + inF;
            var a00 = V.Zero; var a01 = a00; var a02 = a00; var a03 = a00;
            var a10 = a00; var a11 = a00; var a12 = a00; var a13 = a00;
            var a20 = a00; var a21 = a00; var a22 = a00; var a23 = a00;
            var a30 = a00; var a31 = a00; var a32 = a00; var a33 = a00;
            // 2n bf16 weights per load: each 32-bit lane holds columns 2k (low half) and 2k + 1 (high half), so a
            // shift gives the even columns as floats and a mask the odd ones; Store interleaves them back.
            for (int i = 0; i < inF; i++, p += stride)
            {
                Simd.Prefetch(p + ahead);
                if (twoLines) Simd.Prefetch(p + ahead + 32);
                V.LoadBf16Pairs(p, out var e0, out var o0);
                V.LoadBf16Pairs(p + 2 * n, out var e1, out var o1);
                var b0 = V.Create(x0[i]);
                a00 = V.MultiplyAdd(e0, b0, a00); a01 = V.MultiplyAdd(o0, b0, a01);
                a02 = V.MultiplyAdd(e1, b0, a02); a03 = V.MultiplyAdd(o1, b0, a03);
                if (R.Count > 1)
                {
                    var b1 = V.Create(x1[i]);
                    a10 = V.MultiplyAdd(e0, b1, a10); a11 = V.MultiplyAdd(o0, b1, a11);
                    a12 = V.MultiplyAdd(e1, b1, a12); a13 = V.MultiplyAdd(o1, b1, a13);
                }
                if (R.Count > 2)
                {
                    var b2 = V.Create(x2[i]);
                    a20 = V.MultiplyAdd(e0, b2, a20); a21 = V.MultiplyAdd(o0, b2, a21);
                    a22 = V.MultiplyAdd(e1, b2, a22); a23 = V.MultiplyAdd(o1, b2, a23);
                }
                if (R.Count > 3)
                {
                    var b3 = V.Create(x3[i]);
                    a30 = V.MultiplyAdd(e0, b3, a30); a31 = V.MultiplyAdd(o0, b3, a31);
                    a32 = V.MultiplyAdd(e1, b3, a32); a33 = V.MultiplyAdd(o1, b3, a33);
                }
            }
            Spill(sums, n, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33);
        }

        /// <summary>Row k's sums over the tile at <paramref name="p"/> (fp32), as 4 vectors at sums + 4 k n.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void SumsFp32<V, R>(float* p, long stride, float* x0, int inF, float* sums)
            where V : unmanaged, IFloatVector<V> where R : struct, IRowCount
        {
            int n = V.Count, lines = 4 * n * sizeof(float) / 64; // cache lines of a weight row's fp32 tile
            long ahead = PrefetchRows * stride;
            float* x1 = x0 + inF, x2 = x1 + inF, x3 = x2 + inF;
            var a00 = V.Zero; var a01 = a00; var a02 = a00; var a03 = a00;
            var a10 = a00; var a11 = a00; var a12 = a00; var a13 = a00;
            var a20 = a00; var a21 = a00; var a22 = a00; var a23 = a00;
            var a30 = a00; var a31 = a00; var a32 = a00; var a33 = a00;
            for (int i = 0; i < inF; i++, p += stride)
            {
                Simd.Prefetch(p + ahead);
                if (lines > 1) Simd.Prefetch(p + ahead + 16);
                if (lines > 2) { Simd.Prefetch(p + ahead + 32); Simd.Prefetch(p + ahead + 48); }
                var w0 = V.Load(p); var w1 = V.Load(p + n);
                var w2 = V.Load(p + 2 * n); var w3 = V.Load(p + 3 * n);
                var b0 = V.Create(x0[i]);
                a00 = V.MultiplyAdd(w0, b0, a00); a01 = V.MultiplyAdd(w1, b0, a01);
                a02 = V.MultiplyAdd(w2, b0, a02); a03 = V.MultiplyAdd(w3, b0, a03);
                if (R.Count > 1)
                {
                    var b1 = V.Create(x1[i]);
                    a10 = V.MultiplyAdd(w0, b1, a10); a11 = V.MultiplyAdd(w1, b1, a11);
                    a12 = V.MultiplyAdd(w2, b1, a12); a13 = V.MultiplyAdd(w3, b1, a13);
                }
                if (R.Count > 2)
                {
                    var b2 = V.Create(x2[i]);
                    a20 = V.MultiplyAdd(w0, b2, a20); a21 = V.MultiplyAdd(w1, b2, a21);
                    a22 = V.MultiplyAdd(w2, b2, a22); a23 = V.MultiplyAdd(w3, b2, a23);
                }
                if (R.Count > 3)
                {
                    var b3 = V.Create(x3[i]);
                    a30 = V.MultiplyAdd(w0, b3, a30); a31 = V.MultiplyAdd(w1, b3, a31);
                    a32 = V.MultiplyAdd(w2, b3, a32); a33 = V.MultiplyAdd(w3, b3, a33);
                }
            }
            Spill(sums, n, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33);
        }

        /// <summary>A tile's accumulators, row after row (unused rows' zeros too: a few stores per tile, against In multiply-adds).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Spill<V>(float* sums, int n, V a00, V a01, V a02, V a03, V a10, V a11, V a12, V a13,
            V a20, V a21, V a22, V a23, V a30, V a31, V a32, V a33) where V : unmanaged, IFloatVector<V>
        {
            a00.Store(sums); a01.Store(sums + n); a02.Store(sums + 2 * n); a03.Store(sums + 3 * n);
            a10.Store(sums + 4 * n); a11.Store(sums + 5 * n); a12.Store(sums + 6 * n); a13.Store(sums + 7 * n);
            a20.Store(sums + 8 * n); a21.Store(sums + 9 * n); a22.Store(sums + 10 * n); a23.Store(sums + 11 * n);
            a30.Store(sums + 12 * n); a31.Store(sums + 13 * n); a32.Store(sums + 14 * n); a33.Store(sums + 15 * n);
        }

        /// <summary>Adds the bias to columns [j, j + 4n) of row r and writes them in the output's dtype, from the tile's
        /// 4 accumulators stored one after another at <paramref name="split"/>. In bf16 those are even and odd columns
        /// (the first two vectors: columns [0, 2n); the last two: [2n, 4n)) and are interleaved back through the stack:
        /// once per tile and row, against In multiply-adds per vector, so a scalar pass costs nothing measurable.</summary>
        private void Store<V>(int r, int j, float* split) where V : unmanaged, IFloatVector<V>
        {
            int n = V.Count;
            long at = (long)r * Out + j;
            if (IsBf16)
            {
                var sums = stackalloc float[4 * n];
                for (int k = 0; k < n; k++)
                {
                    sums[2 * k] = split[k]; sums[2 * k + 1] = split[n + k];
                    sums[2 * n + 2 * k] = split[2 * n + k]; sums[2 * n + 2 * k + 1] = split[3 * n + k];
                }
                var y = (ushort*)Y + at;
                for (int v = 0; v < 4; v++)
                {
                    var sum = V.Load(sums + v * n);
                    if (Bias is not null) sum += V.LoadBf16((ushort*)Bias + j + v * n);
                    sum.StoreBf16(y + v * n);
                }
            }
            else
            {
                var y = (float*)Y + at;
                for (int v = 0; v < 4; v++)
                {
                    var sum = V.Load(split + v * n);
                    if (Bias is not null) sum += V.Load((float*)Bias + j + v * n);
                    sum.Store(y + v * n);
                }
            }
        }

        /// <summary>Columns [j0, j1), fewer than a tile, for every row: the ragged end past the last whole tile. Walks the
        /// weights row by row as the tiles do (column by column would miss the cache once per weight).</summary>
        private void Ragged(int j0, int j1)
        {
            int width = j1 - j0;
            Span<float> sums = stackalloc float[MostRows * Tile];
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

        private float WeightAt(int i, int j) => Bf16.At(W, Layout.IndexOf(i, j), IsBf16);
    }

    /// <summary>How many rows a tile kernel handles, as a type, so the JIT compiles one kernel per count with the unused rows' code removed.</summary>
    private interface IRowCount { static abstract int Count { get; } }
    private readonly struct One : IRowCount { public static int Count => 1; }
    private readonly struct Two : IRowCount { public static int Count => 2; }
    private readonly struct Three : IRowCount { public static int Count => 3; }
    private readonly struct Four : IRowCount { public static int Count => 4; }
}
