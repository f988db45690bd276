using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Loop;

/// <summary>
/// The optimizer's one-pass update and clipping's sum of squares against the same arithmetic in float64: fp32
/// parameters, and bf16 parameters with fp32 masters (the parameter is the master rounded), every element including
/// the ragged end past the last whole vector and the split between threads.
/// </summary>
[Trait("Category", OrleansGpt.Tests.Model.KernelPaths.Category)]
public sealed class AdamWKernelTests
{
    private const int Elements = 140_007; // two parts of whole vectors, then a ragged end of 7

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TakesAdamWsStep(bool mixedPrecision)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var weight = randn([Elements], generator: g);
        var grad = randn([Elements], generator: g) * 0.1;
        var m = randn([Elements], generator: g) * 0.01;
        var v = rand([Elements], generator: g) * 0.001;
        var dtype = mixedPrecision ? ScalarType.BFloat16 : ScalarType.Float32;
        var parameter = weight.to(dtype);
        var gradient = grad.to(dtype);
        Tensor? master = mixedPrecision ? weight.clone() : null;
        if (!AdamWKernel.Applies(parameter, gradient, m, v, master)) return; // libtorch's ops on such a CPU

        const double decay = 1 - 0.1 * 0.01, beta1 = 0.9, beta2 = 0.999, stepSize = 0.1 / (1 - 0.9 * 0.9), epsilon = 1e-8;
        double bias2Root = Math.Sqrt(1 - 0.999 * 0.999);
        var g64 = gradient.to(ScalarType.Float64);
        var m64 = m.to(ScalarType.Float64) * beta1 + g64 * (1 - beta1);
        var v64 = v.to(ScalarType.Float64) * beta2 + g64 * g64 * (1 - beta2);
        var w64 = weight.to(ScalarType.Float64) * decay - stepSize * m64 / (v64.sqrt() / bias2Root + epsilon);

        AdamWKernel.Step(parameter, gradient, m, v, master, (float)decay, (float)beta1, (float)beta2, (float)stepSize, (float)bias2Root, (float)epsilon);

        AssertClose(m64, m, "first moment");
        AssertClose(v64, v, "second moment");
        AssertClose(w64, master ?? parameter, "weight");
        if (master is not null)
            Assert.True(parameter.eq(master.to(ScalarType.BFloat16)).all().item<bool>(), "the bf16 parameter is not its master rounded");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void SumsSquaresForClipping(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(4);
        var grad = randn([Elements], generator: g).to(dtype);
        if (!AdamWKernel.AppliesToNorm(grad)) return;
        double expected = grad.to(ScalarType.Float64).square().sum().item<double>();
        Assert.Equal(expected, AdamWKernel.SumOfSquares(grad), expected * 1e-5);
        Assert.Equal(0.0, AdamWKernel.SumOfSquares(zeros(0)));
    }

    private static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        var error = (actual.to(ScalarType.Float64) - expected).abs();
        var allowed = 1e-6 + 1e-5 * expected.abs();
        Assert.True((error <= allowed).all().item<bool>(), $"{what}: largest error {error.max().item<double>():G3}");
    }
}
