using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
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

    /// <summary>All-ones lanes where elements [firstIndex, firstIndex + 16) survive.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> KeepLanes(uint firstIndex, uint seed, uint threshold)
    {
        var index = Vector512.Create(firstIndex) + Vector512<uint>.Indices;
        return Vector512.GreaterThanOrEqual(Mix(Mix(index) ^ Vector512.Create(seed)), Vector512.Create(threshold)).AsSingle();
    }

    private static uint Mix(uint x)
    {
        x ^= x >> 16; x *= 0x7FEB352Du; x ^= x >> 15; x *= 0x846CA68Bu; x ^= x >> 16;
        return x;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> Mix(Vector512<uint> x)
    {
        x ^= x >> 16; x *= Vector512.Create(0x7FEB352Du); x ^= x >> 15; x *= Vector512.Create(0x846CA68Bu); x ^= x >> 16;
        return x;
    }
}
