using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace OrleansGpt.Training.Numerics;

/// <summary>bf16 (the high 16 bits of a float) to and from floats, and element access to fp32 or bf16 memory, for the
/// kernels that read and write tensors themselves.</summary>
internal static unsafe class Bf16
{
    /// <summary>16 bf16 values as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(ushort* p) => (Avx512F.ConvertToVector512UInt32(Vector256.Load(p)) << 16).AsSingle();

    /// <summary>16 floats rounded to the nearest bf16, ties to even.</summary>
    /// <remarks>A NaN stays NaN without a check: every input the kernels round comes from bf16 values (low 16 bits zero),
    /// and a NaN that arithmetic makes from them either carries such an input's payload or is the default NaN, so the
    /// rounding increment never carries out of the payload.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ushort> Narrow(Vector512<float> v)
    {
        var bits = v.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One)) >> 16;
        return Avx512F.ConvertToVector256UInt16(rounded);
    }

    /// <summary>One float rounded as <see cref="Narrow"/> does.</summary>
    public static ushort Round(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>One bf16 value as a float.</summary>
    public static float ToSingle(ushort value) => BitConverter.Int32BitsToSingle(value << 16);

    // Element access for the kernels that take fp32 or bf16 tensors alike: element i of an array of either dtype.

    /// <summary>Elements [i, i + 16) as floats, from fp32 memory or widened from bf16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(void* elements, long i, bool bf16) =>
        bf16 ? Widen((ushort*)elements + i) : Vector512.Load((float*)elements + i);

    /// <summary>Writes elements [i, i + 16): as they are in fp32 memory, rounded (<see cref="Narrow"/>) in bf16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector512<float> v, void* elements, long i, bool bf16)
    {
        if (bf16) Narrow(v).Store((ushort*)elements + i);
        else v.Store((float*)elements + i);
    }

    /// <summary>Element i as a float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(void* elements, long i, bool bf16) => bf16 ? ToSingle(((ushort*)elements)[i]) : ((float*)elements)[i];

    /// <summary>Writes element i, rounded (<see cref="Round"/>) in bf16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(void* elements, long i, bool bf16, float value)
    {
        if (bf16) ((ushort*)elements)[i] = Round(value);
        else ((float*)elements)[i] = value;
    }
}
