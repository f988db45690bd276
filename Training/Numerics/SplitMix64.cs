namespace OrleansGpt.Training.Numerics;

/// <summary>
/// SplitMix64 (Steele, Lea and Flood 2014): a 64-bit state, good statistical quality, and a state that is
/// trivially saved and restored, which resumable training and reproducible sampling both need. Unlike
/// <see cref="Random"/>, its sequence is defined here and cannot change with the runtime.
/// </summary>
public struct SplitMix64(ulong state)
{
    /// <summary>The whole state; a generator made from it continues the same sequence.</summary>
    public ulong State { readonly get; private set; } = state;

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong z = State += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A uniform double in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A uniform integer in [0, n), without modulo bias (Lemire's multiply-shift with rejection).</summary>
    public int NextInt(int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        ulong bound = (ulong)n;
        ulong threshold = (0UL - bound) % bound;
        while (true)
        {
            UInt128 product = (UInt128)NextUInt64() * bound;
            if ((ulong)product >= threshold)
                return (int)(product >> 64);
        }
    }

    /// <summary>Fisher-Yates shuffle of <paramref name="items"/> in place.</summary>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
