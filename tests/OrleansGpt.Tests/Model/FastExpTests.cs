using System.Runtime.Intrinsics;
using OrleansGpt.Training.Numerics;

namespace OrleansGpt.Tests.Model;

/// <summary>The training kernels' float exponential: within 2 ulp of Math.Exp where softmaxes use it, 0 far below, NaN kept.</summary>
public sealed class FastExpTests
{
    [Fact]
    public void IsWithinTwoUlpOfTheExponential()
    {
        if (!DecodeKernels.IsSupported) return; // the kernels that use it do not run on such a CPU
        double worst = 0;
        var lanes = new float[16];
        for (int i = 0; i < 200_000; i += 16)
        {
            for (int j = 0; j < 16; j++)
                lanes[j] = -87f + (i + j) * (95f / 200_000); // [-87, 8)
            var e = FastExp.Of(Vector512.Create(lanes));
            for (int j = 0; j < 16; j++)
            {
                double exact = Math.Exp(lanes[j]);
                float ulp = MathF.BitIncrement((float)exact) - (float)exact;
                worst = Math.Max(worst, Math.Abs(e.GetElement(j) - exact) / ulp);
            }
        }
        Assert.True(worst <= 2, $"worst error {worst:F2} ulp");
    }

    [Fact]
    public void GivesZeroFarBelowAndKeepsNaN()
    {
        if (!DecodeKernels.IsSupported) return;
        var e = FastExp.Of(Vector512.Create([float.NegativeInfinity, -1000f, -88f, float.NaN, 0f, -1f, 1f, 2f, 3f, 4f, 5f, 6f, 7f, 8f, 9f, 10f]));
        Assert.Equal(0f, e.GetElement(0));
        Assert.Equal(0f, e.GetElement(1));
        Assert.Equal(0f, e.GetElement(2));
        Assert.True(float.IsNaN(e.GetElement(3)));
        Assert.Equal(1f, e.GetElement(4));
    }
}
