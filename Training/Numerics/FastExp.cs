using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// e^x of 16 floats in float arithmetic, for the training kernels' softmaxes (every argument there is at most 0).
/// </summary>
/// <remarks>
/// <para>Why: .NET's Vector512.Exp(float) widens each half to double and evaluates a double polynomial (it is exact to
/// fp32 rounding, but costs two exponentials of doubles and the conversions); the loss kernel and the attention kernel
/// take one exponential per logit and per attention weight.</para>
/// <para>Method (Cephes' expf): n = round(x log2 e); r = x - n ln 2, with ln 2 in two parts so r is exact; a degree-7
/// polynomial for e^r on |r| &lt;= ln 2 / 2; then x 2^n by vscalefps. Within 2 ulp of e^x (checked against Math.Exp in
/// the tests); arguments below -87.3 give 0, above 88.7 give e^88.7 (not infinity), NaN gives NaN.</para>
/// </remarks>
public static class FastExp
{
    private const float Lowest = -87.33655f, Highest = 88.72283f;

    /// <summary>e^x of each lane (needs AVX-512: callers are kernels that check for it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Of(Vector512<float> x)
    {
        // vmaxps/vminps return their second operand when either is NaN, so a NaN argument stays NaN.
        var clamped = Avx512F.Min(Vector512.Create(Highest), Avx512F.Max(Vector512.Create(Lowest), x));
        var n = Vector512.Round(clamped * Vector512.Create(1.44269504088896341f));
        var r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), clamped);
        r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var p = Vector512.Create(1.9875691500e-4f);
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        p = Avx512F.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        var result = Avx512F.Scale(p, n);
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(Lowest)), Vector512<float>.Zero, result);
    }
}
