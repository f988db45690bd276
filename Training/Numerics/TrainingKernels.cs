namespace OrleansGpt.Training.Numerics;

/// <summary>
/// The switch shared by our own training kernels: <see cref="CausalAttention"/> (attention with dropout, forward and
/// backward) and <see cref="SoftmaxCrossEntropy"/> (the output layer's loss and gradient).
/// </summary>
public static class TrainingKernels
{
    /// <summary>Off leaves training to libtorch's ops: for side-by-side benchmarks (`bench train --kernel`). Process-wide.</summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>Whether the kernels run now: switched on (and the CPU vectorises at all; see <see cref="Simd.Path"/>).</summary>
    public static bool Active => Enabled && Simd.IsSupported;
}
