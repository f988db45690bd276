using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// The switch and the instruction check shared by our own decode-step kernels: <see cref="SmallBatchMatMul"/> (the
/// matrix products of a few rows) and <see cref="DecodeAttention"/> (one new query per row over a KV cache).
/// </summary>
public static class DecodeKernels
{
    /// <summary>True when this CPU has the AVX-512 instructions the kernels use.</summary>
    public static bool IsSupported => Avx512F.IsSupported && Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>Off leaves every decode step to libtorch: for side-by-side benchmarks (`--kernel`), and a way out should
    /// a kernel misbehave (a silo's `ModelHost:DecodeKernel=torch`). Process-wide; caches made while it is off keep
    /// attention's fp32 keys and values, as before these kernels.</summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>Whether the kernels run now: switched on, on a CPU that has their instructions.</summary>
    public static bool Active => Enabled && IsSupported;
}
