using System.Runtime.CompilerServices;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// e^x of a vector of floats in float arithmetic, for the kernels' softmaxes (every argument there is at most 0) and
/// GELU's tanh.
/// </summary>
/// <remarks>
/// <para>Why: .NET's Vector512.Exp(float) widens each half to double and evaluates a double polynomial (it is exact to
/// fp32 rounding, but costs two exponentials of doubles and the conversions); the loss kernel and the attention kernel
/// take one exponential per logit and per attention weight.</para>
/// <para>Method (Cephes' expf): n = round(x log2 e); r = x - n ln 2, with ln 2 in two parts so r is exact; a degree-7
/// polynomial for e^r on |r| &lt;= ln 2 / 2; then x 2^n, 2^n built in the exponent bits (the same at every width).
/// Within 2 ulp of e^x (checked against Math.Exp in the tests, at every width); arguments below -87.3 give 0, above
/// 88.37 give e^88.37 (n stays at most 127, so 2^n is a normal float), NaN gives NaN.</para>
/// </remarks>
public static class FastExp
{
    private const float Lowest = -87.33655f, Highest = 88.3762626647949f;

    /// <summary>e^x of each lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static V Of<V>(V x) where V : unmanaged, IFloatVector<V>
    {
        // The native max and min return their second operand when either is NaN (x86), or NaN (ARM): NaN stays NaN.
        var clamped = V.MinNative(V.Create(Highest), V.MaxNative(V.Create(Lowest), x));
        var n = V.Round(clamped * V.Create(1.44269504088896341f));
        var r = V.MultiplyAdd(n, V.Create(-0.693359375f), clamped);
        r = V.MultiplyAdd(n, V.Create(2.12194440e-4f), r);
        var p = V.Create(1.9875691500e-4f);
        p = V.MultiplyAdd(p, r, V.Create(1.3981999507e-3f));
        p = V.MultiplyAdd(p, r, V.Create(8.3334519073e-3f));
        p = V.MultiplyAdd(p, r, V.Create(4.1665795894e-2f));
        p = V.MultiplyAdd(p, r, V.Create(1.6666665459e-1f));
        p = V.MultiplyAdd(p, r, V.Create(5.0000001201e-1f));
        p = V.MultiplyAdd(p, r * r, r + V.Create(1f));
        var result = p * V.PowerOfTwo(n);
        return V.Select(V.LessThan(x, V.Create(Lowest)), V.Zero, result);
    }

    /// <summary>e^x of each of <paramref name="x"/>'s elements into <paramref name="into"/>, at the width this process
    /// runs the kernels (for the tests, which check every width in child processes).</summary>
    public static unsafe void Of(ReadOnlySpan<float> x, Span<float> into)
    {
        if (into.Length < x.Length) throw new ArgumentException("The output is shorter than the input", nameof(into));
        fixed (float* from = x)
        fixed (float* to = into)
        {
            switch (Simd.Width)
            {
                case 512: Each<Floats512>(from, to, x.Length); break;
                case 256: Each<Floats256>(from, to, x.Length); break;
                default: Each<Floats128>(from, to, x.Length); break;
            }
        }
    }

    private static unsafe void Each<V>(float* from, float* to, int n) where V : unmanaged, IFloatVector<V>
    {
        var lanes = stackalloc float[V.Count];
        for (int i = 0; i < n; i += V.Count)
        {
            int here = Math.Min(V.Count, n - i);
            for (int j = 0; j < V.Count; j++) lanes[j] = j < here ? from[i + j] : 0;
            var e = Of(V.Load(lanes));
            e.Store(lanes);
            for (int j = 0; j < here; j++) to[i + j] = lanes[j];
        }
    }
}
