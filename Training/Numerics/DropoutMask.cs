using System.Runtime.CompilerServices;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// Dropout masks that are never stored: whether element i survives is a hash of (i, a seed), so the backward pass
/// recomputes the forward pass's mask from the seed alone. Used by <see cref="HashDropout"/> and <see cref="CausalAttention"/>.
/// </summary>
/// <remarks>The hash is lowbias32 (C. Wellons: a multiply-xorshift with low bias) of the index, mixed with the seed and
/// hashed again; an element is kept when the result is at least p x 2^32, so with probability 1 - p to 2^-32.</remarks>
internal static class DropoutMask
{
    /// <summary>The hash value below which an element is dropped.</summary>
    public static uint Threshold(double dropout) => (uint)Math.Min(uint.MaxValue, Math.Round(dropout * 4294967296.0));

    /// <summary>A fresh seed from libtorch's default generator, so manual_seed makes a run's masks repeatable.</summary>
    public static ulong NewSeed() => (ulong)randint(long.MaxValue, [1], ScalarType.Int64).item<long>();

    /// <summary>Whether element <paramref name="index"/> survives.</summary>
    public static bool Keeps(uint index, uint seed, uint threshold) => Mix(Mix(index) ^ seed) >= threshold;

    /// <summary>All-ones lanes where elements [firstIndex, firstIndex + V.Count) survive.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static V KeepLanes<V>(uint firstIndex, uint seed, uint threshold) where V : unmanaged, IFloatVector<V> =>
        V.HashAtLeast(firstIndex, seed, threshold);

    /// <summary>lowbias32's two multipliers (each width's <see cref="IFloatVector{TSelf}.HashAtLeast"/> uses them too).</summary>
    internal const uint Multiplier1 = 0x7FEB352Du, Multiplier2 = 0x846CA68Bu;

    private static uint Mix(uint x)
    {
        x ^= x >> 16; x *= Multiplier1; x ^= x >> 15; x *= Multiplier2; x ^= x >> 16;
        return x;
    }
}
