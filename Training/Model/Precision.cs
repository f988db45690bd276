using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Model;

/// <summary>The number format the model computes in.</summary>
public enum Precision
{
    /// <summary>32-bit floats: exact reference, slowest.</summary>
    Fp32,

    /// <summary>bfloat16 weights, activations and KV cache: half the bytes a decode step streams, so faster decoding on
    /// every CPU (widened to fp32 in registers by the own kernels); training in it pays only with bf16 dot products.</summary>
    Bf16,
}

/// <summary>Chooses a precision the machine can run well.</summary>
public static class PrecisionSupport
{
    private static readonly Lazy<bool> s_nativeBf16 = new(DetectNativeBf16);

    /// <summary>
    /// True when the CPU has bf16 dot-product instructions (AVX512_BF16 or AMX-BF16). Without them libtorch
    /// still computes in bf16, but by converting through fp32, which is slower than fp32 itself.
    /// </summary>
    public static bool CpuHasNativeBf16 => s_nativeBf16.Value;

    /// <summary>Parses "fp32" / "bf16" (also "float32", "bfloat16").</summary>
    public static Precision Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => Precision.Fp32,
        "bf16" or "bfloat16" => Precision.Bf16,
        _ => throw new ArgumentOutOfRangeException(nameof(text), text, "Unknown dtype; expected fp32 or bf16"),
    };

    /// <summary>
    /// Returns the precision to use on <paramref name="device"/> and, when it is not simply what was asked, a line saying
    /// what happens instead. bf16 on a CPU without bf16 dot products: for decoding (<paramref name="decoding"/>: generate,
    /// serve, the silo) the weights and KV cache stay bf16 and the own kernels compute in fp32 registers, the larger
    /// products of a prefill in fp32 over widened copies (<see cref="EmulatesBf16Products"/>); for training and evaluation,
    /// whose products are all large, fp32, since libtorch would emulate every bf16 GEMM; and fp32 too when the own decode
    /// kernels are switched off (<c>--kernel torch</c>), as libtorch would then emulate every product of a step.
    /// </summary>
    public static (Precision Precision, string? Note) Resolve(Precision requested, Device device, bool decoding = false)
    {
        if (requested != Precision.Bf16 || device.type != DeviceType.CPU || CpuHasNativeBf16)
            return (requested, null);
        if (decoding && Numerics.DecodeKernels.Active)
            return (Precision.Bf16, $"this CPU lacks avx512_bf16/amx_bf16: bf16 weights and KV cache, products in fp32 registers ({Numerics.Simd.Path})");
        return (Precision.Fp32, decoding
            ? "this CPU lacks avx512_bf16/amx_bf16 and the own decode kernels are off, so libtorch would emulate every bf16 product; using fp32"
            : "this CPU lacks avx512_bf16/amx_bf16, so libtorch would emulate bf16 matrix products (slower than fp32); using fp32");
    }

    /// <summary>Whether libtorch would emulate a product of <paramref name="x"/>: bf16 on a CPU without bf16 dot products
    /// (`bench gemm` measured 0.3 GFLOP/s there against 164 in fp32, Zen 3).</summary>
    public static bool EmulatesBf16Products(Tensor x) =>
        x.dtype == ScalarType.BFloat16 && x.device_type == DeviceType.CPU && !CpuHasNativeBf16;

    /// <summary>x W (+ bias) in fp32 over widened copies, rounded back to x's dtype: for products libtorch would emulate
    /// (<see cref="EmulatesBf16Products"/>), such as a bf16 prefill's. Widening a layer's weights costs a pass over them,
    /// against a product of many rows that reads them again per block.</summary>
    /// <param name="x">(M, K).</param>
    /// <param name="weight">(K, N).</param>
    public static Tensor WidenedProduct(Tensor x, Tensor weight, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        var wf = weight.to(ScalarType.Float32);
        var y = bias is null ? matmul(xf, wf) : addmm(bias.to(ScalarType.Float32), xf, wf, beta: 1, alpha: 1);
        return y.to(x.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The tensor element type for a precision.</summary>
    public static ScalarType ToScalarType(this Precision precision) =>
        precision == Precision.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>The short name used on the command line and in logs.</summary>
    public static string Name(this Precision precision) => precision == Precision.Bf16 ? "bf16" : "fp32";

    private static bool DetectNativeBf16()
    {
        try
        {
            if (!File.Exists("/proc/cpuinfo"))
                return false;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (!line.StartsWith("flags", StringComparison.Ordinal))
                    continue;
                var flags = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return flags.Contains("avx512_bf16") || flags.Contains("amx_bf16");
            }
        }
        catch (IOException)
        {
        }
        return false;
    }
}
