namespace OrleansGpt.Training.Numerics;

/// <summary>
/// The switch shared by our own training kernels: <see cref="CausalAttention"/> (attention with dropout, forward and
/// backward) and <see cref="SoftmaxCrossEntropy"/> (the output layer's loss and gradient).
/// </summary>
public static class TrainingKernels
{
    /// <summary>Off leaves training to libtorch's ops: for side-by-side benchmarks (`bench train --kernel`). Process-wide.</summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>Whether the kernels run now: switched on, on a CPU with the AVX-512 instructions they use.</summary>
    public static bool Active => Enabled && DecodeKernels.IsSupported;
}
