using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Model;

/// <summary>The number format the model computes in.</summary>
public enum Precision
{
    /// <summary>32-bit floats: exact reference, slowest.</summary>
    Fp32,

    /// <summary>bfloat16 weights and activations: about 2x faster decoding on CPUs with native bf16 dot products.</summary>
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
    /// Returns the precision to use on <paramref name="device"/>: the requested one, or fp32 with a reason when
    /// bf16 was asked for on a CPU without native bf16 support.
    /// </summary>
    public static (Precision Precision, string? Fallback) Resolve(Precision requested, Device device)
    {
        if (requested == Precision.Bf16 && device.type == DeviceType.CPU && !CpuHasNativeBf16)
            return (Precision.Fp32, "this CPU lacks avx512_bf16/amx_bf16, so bf16 would be slower than fp32; using fp32");
        return (requested, null);
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
