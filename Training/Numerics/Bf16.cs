using System.Runtime.CompilerServices;

namespace OrleansGpt.Training.Numerics;

/// <summary>bf16 (the high 16 bits of a float) to and from floats, and element access to fp32 or bf16 memory, for the
/// kernels that read and write tensors themselves.</summary>
internal static unsafe class Bf16
{
    /// <summary>One float rounded to the nearest bf16, ties to even (as every width's <see cref="IFloatVector{TSelf}.StoreBf16"/>).</summary>
    /// <remarks>A NaN stays NaN without a check: every input the kernels round comes from bf16 values (low 16 bits zero),
    /// and a NaN that arithmetic makes from them either carries such an input's payload or is the default NaN, so the
    /// rounding increment never carries out of the payload.</remarks>
    public static ushort Round(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>One bf16 value as a float.</summary>
    public static float ToSingle(ushort value) => BitConverter.Int32BitsToSingle(value << 16);

    // Element access for the kernels that take fp32 or bf16 tensors alike: element i of an array of either dtype.

    /// <summary>Elements [i, i + V.Count) as floats, from fp32 memory or widened from bf16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static V Load<V>(void* elements, long i, bool bf16) where V : unmanaged, IFloatVector<V> =>
        bf16 ? V.LoadBf16((ushort*)elements + i) : V.Load((float*)elements + i);

    /// <summary>Writes elements [i, i + V.Count): as they are in fp32 memory, rounded (<see cref="Round"/>) in bf16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store<V>(V v, void* elements, long i, bool bf16) where V : unmanaged, IFloatVector<V>
    {
        if (bf16) v.StoreBf16((ushort*)elements + i);
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
