namespace OrleansGpt.Training.Numerics;

/// <summary>
/// The switch and the instruction check shared by our own decode-step kernels: <see cref="SmallBatchMatMul"/> (the
/// matrix products of a few rows) and <see cref="DecodeAttention"/> (one new query per row over a KV cache).
/// </summary>
public static class DecodeKernels
{
    /// <summary>True when the kernels can run on this CPU: every x86-64 and ARM64 CPU, at the width it has
    /// (<see cref="Simd.Path"/>).</summary>
    public static bool IsSupported => Simd.IsSupported;

    /// <summary>Off leaves every decode step to libtorch: for side-by-side benchmarks (`--kernel`), and a way out should
    /// a kernel misbehave (a silo's `ModelHost:DecodeKernel=torch`). Process-wide; caches made while it is off keep
    /// attention's fp32 keys and values, as before these kernels.</summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>Whether the kernels run now: switched on (and the CPU vectorises at all).</summary>
    public static bool Active => Enabled && IsSupported;
}
