using OrleansGpt.Training.Numerics;

namespace OrleansGpt.Tests.Model;

/// <summary>The kernels' float exponential, at the width this process runs them (the kernel tests rerun in child
/// processes at every narrower width): within 2 ulp of Math.Exp where softmaxes use it, 0 far below, NaN kept.</summary>
[Trait("Category", KernelPaths.Category)]
public sealed class FastExpTests
{
    [Fact]
    public void IsWithinTwoUlpOfTheExponential()
    {
        var x = new float[200_003]; // not a whole number of vectors at any width: the tail goes through the same code
        for (int i = 0; i < x.Length; i++)
            x[i] = -87f + i * (95f / x.Length); // [-87, 8)
        var e = new float[x.Length];
        FastExp.Of(x, e);
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double exact = Math.Exp(x[i]);
            float ulp = MathF.BitIncrement((float)exact) - (float)exact;
            worst = Math.Max(worst, Math.Abs(e[i] - exact) / ulp);
        }
        Assert.True(worst <= 2, $"worst error {worst:F2} ulp on the {Simd.Path} path");
    }

    [Fact]
    public void GivesZeroFarBelowAndKeepsNaN()
    {
        float[] x = [float.NegativeInfinity, -1000f, -88f, float.NaN, 0f, -1f, 1f, 88f, 1000f];
        var e = new float[x.Length];
        FastExp.Of(x, e);
        Assert.Equal(0f, e[0]);
        Assert.Equal(0f, e[1]);
        Assert.Equal(0f, e[2]);
        Assert.True(float.IsNaN(e[3]));
        Assert.Equal(1f, e[4]);
        Assert.True(float.IsFinite(e[7]) && e[7] > 1e38f, $"e^88 gave {e[7]}");
        Assert.True(float.IsFinite(e[8]), $"e^1000 gave {e[8]}: large arguments saturate instead of overflowing");
    }
}
