using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// AdamW's update of one parameter in one pass (read the gradient, the moments and the fp32 weight; write the moments,
/// the weight and, in mixed precision, the model's bf16 copy), and the sum of squares that gradient clipping needs.
/// </summary>
/// <remarks>Why: written as libtorch ops the update is ten passes over every parameter's fp32 state (a conversion of the
/// gradient, decay, two for each moment, square root, division, epsilon, addcdiv, the copy back to bf16): 56-61 ms a step
/// for the tiny preset's 16M parameters, and clipping's norm three more (20-25 ms). The arithmetic is torch.optim.AdamW's,
/// in fp32, in the same order; results agree to fp32 rounding.</remarks>
public static unsafe class AdamWKernel
{
    /// <summary>Whether <see cref="Step"/> takes this parameter: CPU (and <see cref="TrainingKernels"/> on), all
    /// contiguous, fp32 without a master or bf16 with an fp32 master, the gradient in the parameter's dtype.</summary>
    public static bool Applies(Tensor parameter, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor? master) =>
        TrainingKernels.Active && parameter.device_type == DeviceType.CPU && grad.dtype == parameter.dtype
        && parameter.is_contiguous() && grad.is_contiguous() && expAvg.is_contiguous() && expAvgSq.is_contiguous()
        && expAvg.dtype == ScalarType.Float32 && expAvgSq.dtype == ScalarType.Float32
        && (master is null ? parameter.dtype == ScalarType.Float32 : parameter.dtype == ScalarType.BFloat16 && master.dtype == ScalarType.Float32 && master.is_contiguous());

    /// <summary>
    /// w = w x <paramref name="decay"/>; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
    /// w -= <paramref name="stepSize"/> m / (sqrt(v) / <paramref name="bias2Root"/> + eps), on the master where there is one
    /// (then the parameter is the master rounded to bf16).
    /// </summary>
    public static void Step(Tensor parameter, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor? master,
        float decay, float beta1, float beta2, float stepSize, float bias2Root, float epsilon)
    {
        long n = parameter.numel();
        if (n == 0) return;
        bool bf16 = master is not null;
        nint p = TensorMemory.Address(parameter), g = TensorMemory.Address(grad), m = TensorMemory.Address(expAvg), v = TensorMemory.Address(expAvgSq), w = master is null ? p : TensorMemory.Address(master);
        switch (Simd.Width)
        {
            case 512: Step<Floats512>(p, g, m, v, w, n, bf16, decay, beta1, beta2, stepSize, bias2Root, epsilon); break;
            case 256: Step<Floats256>(p, g, m, v, w, n, bf16, decay, beta1, beta2, stepSize, bias2Root, epsilon); break;
            default: Step<Floats128>(p, g, m, v, w, n, bf16, decay, beta1, beta2, stepSize, bias2Root, epsilon); break;
        }
    }

    private static void Step<V>(nint p, nint g, nint m, nint v, nint w, long n, bool bf16,
        float decay, float beta1, float beta2, float stepSize, float bias2Root, float epsilon) where V : unmanaged, IFloatVector<V> =>
        OpenMp.ForRanges(n, (start, end) =>
        {
            var (d, b1, c1, b2, c2, s, r, e) = (V.Create(decay), V.Create(beta1), V.Create(1 - beta1),
                V.Create(beta2), V.Create(1 - beta2), V.Create(stepSize), V.Create(bias2Root), V.Create(epsilon));
            long i = start;
            for (; i + V.Count <= end; i += V.Count)
            {
                var gi = Bf16.Load<V>((void*)g, i, bf16);
                var wi = V.Load((float*)w + i) * d;
                var mi = V.Load((float*)m + i) * b1 + gi * c1;
                var vi = V.Load((float*)v + i) * b2 + gi * gi * c2;
                wi -= s * mi / (V.Sqrt(vi) / r + e);
                mi.Store((float*)m + i);
                vi.Store((float*)v + i);
                wi.Store((float*)w + i);
                if (bf16) wi.StoreBf16((ushort*)p + i);
            }
            for (; i < end; i++)
            {
                float gi = Bf16.At((void*)g, i, bf16);
                float wi = ((float*)w)[i] * decay;
                float mi = ((float*)m)[i] * beta1 + gi * (1 - beta1);
                float vi = ((float*)v)[i] * beta2 + gi * gi * (1 - beta2);
                wi -= stepSize * mi / (MathF.Sqrt(vi) / bias2Root + epsilon);
                ((float*)m)[i] = mi;
                ((float*)v)[i] = vi;
                ((float*)w)[i] = wi;
                if (bf16) ((ushort*)p)[i] = Bf16.Round(wi);
            }
        });

    /// <summary>Whether <see cref="SumOfSquares"/> takes this gradient: CPU, contiguous, fp32 or bf16.</summary>
    public static bool AppliesToNorm(Tensor grad) =>
        TrainingKernels.Active && grad.device_type == DeviceType.CPU && grad.is_contiguous() && grad.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>The sum of the squared elements, accumulated in fp32 per vector lane and in double across blocks.</summary>
    public static double SumOfSquares(Tensor grad)
    {
        long n = grad.numel();
        if (n == 0) return 0;
        bool bf16 = grad.dtype == ScalarType.BFloat16;
        nint g = TensorMemory.Address(grad);
        return Simd.Width switch
        {
            512 => SumOfSquares<Floats512>(g, n, bf16),
            256 => SumOfSquares<Floats256>(g, n, bf16),
            _ => SumOfSquares<Floats128>(g, n, bf16),
        };
    }

    private static double SumOfSquares<V>(nint g, long n, bool bf16) where V : unmanaged, IFloatVector<V>
    {
        var sums = new double[Math.Max(1, get_num_threads())];
        OpenMp.ForRanges(n, (start, end) =>
        {
            double total = 0;
            long whole = start + (end - start) / V.Count * V.Count;
            long block = 256 * V.Count; // fp32 lanes sum 256 squares each, then go to double
            for (long from = start; from < whole; from += block)
            {
                long stop = Math.Min(from + block, whole);
                var lanes = V.Zero;
                for (long i = from; i < stop; i += V.Count)
                {
                    var x = Bf16.Load<V>((void*)g, i, bf16);
                    lanes = V.MultiplyAdd(x, x, lanes);
                }
                total += V.Sum(lanes);
            }
            for (long i = whole; i < end; i++)
            {
                float x = Bf16.At((void*)g, i, bf16);
                total += x * x;
            }
            sums[OpenMp.ThreadNumber] += total;
        });
        return sums.Sum();
    }
}
