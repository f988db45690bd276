using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// Cross-entropy of rows of logits against target ids, with its gradient written over the logits: what training's
/// 50k-wide output layer needs, in three passes over each row instead of libtorch's chain of ops.
/// </summary>
/// <remarks>
/// <para>Why: in a training step of a small GPT-2 the output layer and its loss are most of the time (the tiny preset at
/// 8 x 512 in bf16: ~1.0 of ~1.3 s, the transformer's forward and backward ~0.35). libtorch's cross_entropy on bf16
/// logits widens them to fp32, writes log-probabilities, fills a one-hot gradient, writes the softmax gradient and narrows
/// it back: eight passes over a 128 x 50,258 chunk, through memory. Here a row (100 KB in bf16) stays in the core's cache
/// while it is read twice (maximum, exponentials), its exponentials kept in fp32 beside it, and written once.</para>
/// <para>Numerics: fp32 per row as libtorch's (the maximum subtracted before exponentials), the loss summed in double;
/// the gradient (softmax - one-hot(target)) x scale is rounded once when the logits are bf16.</para>
/// </remarks>
public static unsafe class SoftmaxCrossEntropy
{
    /// <summary>Whether <see cref="LossAndGradient"/> takes these logits: CPU, fp32 or bf16 (and
    /// <see cref="TrainingKernels"/> switched on).</summary>
    public static bool Applies(Tensor logits) =>
        TrainingKernels.Active && logits.device_type == DeviceType.CPU && logits.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>The target of a row that predicts nothing (a block's last position): its loss is 0, its gradient zeros.</summary>
    public const long NoTarget = -1;

    /// <summary>
    /// Returns the summed loss -log softmax(row)[target] over the rows, and overwrites each row with its gradient
    /// (softmax(row) - one-hot(target)) x <paramref name="gradientScale"/>.
    /// </summary>
    /// <param name="logits">(M, V), contiguous, fp32 or bf16.</param>
    /// <param name="targets">M target ids, each in [0, V) or <see cref="NoTarget"/>.</param>
    /// <param name="gradientScale">What the loss is multiplied by before differentiating (1 / predictions, say).</param>
    public static double LossAndGradient(Tensor logits, ReadOnlySpan<long> targets, float gradientScale)
    {
        if (logits.dim() != 2 || !logits.is_contiguous() || logits.dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new ArgumentException($"Logits must be (M, V), contiguous, fp32 or bf16 (got ({string.Join(", ", logits.shape)}) {logits.dtype})", nameof(logits));
        int rows = (int)logits.shape[0], vocab = (int)logits.shape[1];
        if (targets.Length != rows)
            throw new ArgumentException($"{rows} rows need {rows} targets, not {targets.Length}", nameof(targets));
        foreach (long t in targets)
            if ((ulong)t >= (ulong)vocab && t != NoTarget)
                throw new ArgumentOutOfRangeException(nameof(targets), t, $"a target must be in [0, {vocab}) or NoTarget ({NoTarget})");

        bool bf16 = logits.dtype == ScalarType.BFloat16;
        var losses = new double[rows];
        long[] ids = targets.ToArray();
        fixed (byte* data = logits.bytes)
        {
            nint address = (nint)data;
            OpenMp.ForEachThread((part, parts) =>
            {
                // One row's exponentials in fp32 (200 KB, in the core's cache with the row); native memory, as a managed
                // array this size would be a large-object-heap allocation per thread and call, every chunk of every step.
                var scratch = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)vocab * sizeof(float), 64);
                try
                {
                    for (int r = part; r < rows; r += parts)
                        losses[r] = ids[r] == NoTarget
                            ? Clear((byte*)address + (long)r * vocab * (bf16 ? 2 : 4), vocab * (bf16 ? 2 : 4))
                            : Row((byte*)address + (long)r * vocab * (bf16 ? 2 : 4), vocab, (int)ids[r], gradientScale, scratch, bf16);
                }
                finally
                {
                    System.Runtime.InteropServices.NativeMemory.AlignedFree(scratch);
                }
            }, Math.Min(rows, get_num_threads()));
        }
        double sum = 0;
        foreach (double l in losses) sum += l;
        return sum;
    }

    private static double Clear(byte* row, int bytes)
    {
        new Span<byte>(row, bytes).Clear();
        return 0;
    }

    /// <summary>One row at the width the kernels run.</summary>
    private static double Row(byte* row, int vocab, int target, float scale, float* scratch, bool bf16) => (Simd.Width, bf16) switch
    {
        (512, true) => Row<Floats512, Bf16Row>(row, vocab, target, scale, scratch),
        (512, false) => Row<Floats512, Fp32Row>(row, vocab, target, scale, scratch),
        (256, true) => Row<Floats256, Bf16Row>(row, vocab, target, scale, scratch),
        (256, false) => Row<Floats256, Fp32Row>(row, vocab, target, scale, scratch),
        (_, true) => Row<Floats128, Bf16Row>(row, vocab, target, scale, scratch),
        (_, false) => Row<Floats128, Fp32Row>(row, vocab, target, scale, scratch),
    };

    /// <summary>One row: its loss, and its gradient over it.</summary>
    /// <remarks>Three passes: the maximum; the exponentials, kept in <paramref name="scratch"/> as they are summed; the
    /// gradient from them. One exponential per element instead of two: 512 bf16 rows took 5.7-5.8 ms at best against
    /// 10.2-10.3 computing them again (fp32, bound by memory, 8.1-8.8 against 8.6-9.0; AVX-512).</remarks>
    private static double Row<V, TRow>(byte* row, int vocab, int target, float scale, float* scratch)
        where V : unmanaged, IFloatVector<V> where TRow : struct, IRow
    {
        int whole = vocab / V.Count * V.Count;
        var top = V.Create(float.NegativeInfinity);
        for (int i = 0; i < whole; i += V.Count)
            top = V.Max(top, TRow.Load<V>(row, i));
        float max = V.MaxAcross(top);
        for (int i = whole; i < vocab; i++)
            max = MathF.Max(max, TRow.At(row, i));

        var shift = V.Create(max);
        var total = V.Zero;
        for (int i = 0; i < whole; i += V.Count)
        {
            var e = FastExp.Of(TRow.Load<V>(row, i) - shift);
            e.Store(scratch + i);
            total += e;
        }
        float sum = V.Sum(total);
        for (int i = whole; i < vocab; i++)
            sum += MathF.Exp(TRow.At(row, i) - max);

        float logit = TRow.At(row, target);
        double loss = Math.Log(sum) + max - logit;

        var factor = V.Create(scale / sum);
        for (int i = 0; i < whole; i += V.Count)
            TRow.Store(row, i, V.Load(scratch + i) * factor);
        for (int i = whole; i < vocab; i++)
            TRow.Set(row, i, MathF.Exp(TRow.At(row, i) - max) * (scale / sum));
        TRow.Set(row, target, (MathF.Exp(logit - max) / sum - 1f) * scale);
        return loss;
    }

    /// <summary>Reads and writes a row's elements as floats, so <see cref="Row{V, TRow}"/> is compiled once per dtype.</summary>
    private interface IRow
    {
        static abstract V Load<V>(byte* row, int i) where V : unmanaged, IFloatVector<V>;
        static abstract void Store<V>(byte* row, int i, V v) where V : unmanaged, IFloatVector<V>;
        static abstract float At(byte* row, int i);
        static abstract void Set(byte* row, int i, float value);
    }

    private readonly struct Fp32Row : IRow
    {
        public static V Load<V>(byte* row, int i) where V : unmanaged, IFloatVector<V> => V.Load((float*)row + i);
        public static void Store<V>(byte* row, int i, V v) where V : unmanaged, IFloatVector<V> => v.Store((float*)row + i);
        public static float At(byte* row, int i) => ((float*)row)[i];
        public static void Set(byte* row, int i, float value) => ((float*)row)[i] = value;
    }

    private readonly struct Bf16Row : IRow
    {
        public static V Load<V>(byte* row, int i) where V : unmanaged, IFloatVector<V> => V.LoadBf16((ushort*)row + i);
        public static void Store<V>(byte* row, int i, V v) where V : unmanaged, IFloatVector<V> => v.StoreBf16((ushort*)row + i);
        public static float At(byte* row, int i) => Bf16.ToSingle(((ushort*)row)[i]);
        public static void Set(byte* row, int i, float value) => ((ushort*)row)[i] = Bf16.Round(value);
    }
}
