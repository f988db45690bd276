using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// Dropout whose mask is a hash of each element's index and a seed (<see cref="DropoutMask"/>): forward and backward
/// are the same pass (keep and scale by 1/(1 - p), or zero), shared out over libtorch's OpenMP team, and nothing but the
/// seed is kept between them.
/// </summary>
/// <remarks>Why: libtorch's CPU dropout draws its mask one element at a time on one thread (bernoulli_ from the CPU
/// generator) and stores it: 5 ms for the 1M activations of the tiny preset at 8 x 512, nine times a step, about as long
/// as a layer's matrix products. This pass runs at memory speed.</remarks>
public static unsafe class HashDropout
{
    /// <summary>Whether <see cref="Apply"/> takes <paramref name="x"/>: CPU (and <see cref="TrainingKernels"/> on),
    /// fp32 or bf16, under 2^32 elements.</summary>
    public static bool Applies(Tensor x) =>
        TrainingKernels.Active && x.device_type == DeviceType.CPU && x.dtype is ScalarType.Float32 or ScalarType.BFloat16 && x.numel() < uint.MaxValue;

    /// <summary>x with each element kept (and scaled by 1/(1 - p)) or zeroed as <see cref="Keeps"/> says; differentiable.</summary>
    /// <param name="dropout">Probability of dropping an element, in [0, 1).</param>
    /// <param name="seed">The mask's seed; by default drawn from libtorch's generator.</param>
    public static Tensor Apply(Tensor x, double dropout, ulong? seed = null)
    {
        if (dropout is < 0 or >= 1 || double.IsNaN(dropout))
            throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "dropout must be in [0, 1)");
        if (!Applies(x))
            throw new ArgumentException($"{x.dtype} on {x.device} with {x.numel()} elements: fp32 or bf16 on the CPU, under 2^32 elements", nameof(x));
        ulong maskSeed = seed ?? DropoutMask.NewSeed();
        return x.requires_grad && is_grad_enabled() ? DropoutFunction.apply(x.contiguous(), dropout, maskSeed) : Mask(x.contiguous(), dropout, maskSeed);
    }

    /// <summary>Whether element <paramref name="index"/> (in row-major order) survives under <paramref name="seed"/>.</summary>
    public static bool Keeps(ulong seed, long index, double dropout) =>
        DropoutMask.Keeps((uint)index, (uint)seed, DropoutMask.Threshold(dropout));

    private sealed class DropoutFunction : autograd.SingleTensorFunction<DropoutFunction>
    {
        public override string Name => nameof(HashDropout);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            double dropout = (double)vars[1];
            ulong seed = (ulong)vars[2];
            ctx.save_data("dropout", dropout);
            ctx.save_data("seed", seed);
            return Mask((Tensor)vars[0], dropout, seed);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) =>
            [Mask(grad_output.contiguous(), (double)ctx.get_data("dropout"), (ulong)ctx.get_data("seed")), null!, null!];
    }

    private static Tensor Mask(Tensor x, double dropout, ulong seed)
    {
        var y = empty_like(x);
        long n = x.numel();
        if (n == 0) return y;
        bool bf16 = x.dtype == ScalarType.BFloat16;
        uint threshold = DropoutMask.Threshold(dropout), maskSeed = (uint)seed;
        float scale = (float)(1 / (1 - dropout));
        nint from = TensorMemory.Address(x), to = TensorMemory.Address(y);
        switch (Simd.Width)
        {
            case 512: Mask<Floats512>(from, to, n, bf16, threshold, maskSeed, scale); break;
            case 256: Mask<Floats256>(from, to, n, bf16, threshold, maskSeed, scale); break;
            default: Mask<Floats128>(from, to, n, bf16, threshold, maskSeed, scale); break;
        }
        return y;
    }

    private static void Mask<V>(nint from, nint to, long n, bool bf16, uint threshold, uint maskSeed, float scale) where V : unmanaged, IFloatVector<V> =>
        OpenMp.ForRanges(n, (start, end) =>
        {
            var factor = V.Create(scale);
            long i = start;
            for (; i + V.Count <= end; i += V.Count)
            {
                var keep = DropoutMask.KeepLanes<V>((uint)i, maskSeed, threshold);
                Bf16.Store(V.Select(keep, Bf16.Load<V>((void*)from, i, bf16) * factor, V.Zero), (void*)to, i, bf16);
            }
            for (; i < end; i++)
            {
                bool kept = DropoutMask.Keeps((uint)i, maskSeed, threshold);
                Bf16.Set((void*)to, i, bf16, kept ? Bf16.At((void*)from, i, bf16) * scale : 0f);
            }
        });
}
