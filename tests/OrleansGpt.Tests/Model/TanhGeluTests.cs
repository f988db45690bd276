using OrleansGpt.Training.Numerics;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>The MLP's own GELU: libtorch's tanh-form GELU and its gradient in float64, every element including a ragged end.</summary>
[Trait("Category", KernelPaths.Category)]
public sealed class TanhGeluTests
{
    [Theory]
    [InlineData(ScalarType.Float32, 70_007)] // parts for both threads and a ragged end of 7
    [InlineData(ScalarType.BFloat16, 70_007)]
    [InlineData(ScalarType.Float32, 5)]      // shorter than one vector
    public void GivesLibTorchsGeluAndGradient(ScalarType dtype, int elements)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(8);
        var values = randn([elements], generator: g) * 4;
        values[0] = 20; values[1] = -20; // where tanh saturates
        var x = values.to(dtype).detach().requires_grad_(true);
        if (!TanhGelu.Applies(x)) return; // libtorch's gelu on such a CPU
        var outputGrad = randn([elements], generator: g).to(dtype);

        var y = TanhGelu.Apply(x);
        y.backward([outputGrad]);

        var exact = x.detach().to(ScalarType.Float64).requires_grad_(true);
        var expected = nn.functional.gelu(exact, GELU.Approximate.tanh);
        expected.backward([outputGrad.to(ScalarType.Float64)]);
        AssertClose(expected, y, dtype, "gelu");
        AssertClose(exact.grad!, x.grad!, dtype, "gradient");
    }

    private static void AssertClose(Tensor expected, Tensor actual, ScalarType dtype, string what)
    {
        var e = dtype == ScalarType.BFloat16 ? expected.detach().to(dtype).to(ScalarType.Float64) : expected.detach();
        var error = (actual.detach().to(ScalarType.Float64) - e).abs();
        // The derivative's two terms cancel where it crosses 0 (x near -0.75), which leaves ~1e-6 of fp32 error there;
        // bf16 allows a rounding either way of a value at the bottom of its binade.
        var allowed = dtype == ScalarType.Float32 ? 1e-5 + 1e-5 * e.abs() : 1e-5 + e.abs() / 64;
        Assert.True((error <= allowed).all().item<bool>(), $"{what}: largest error {error.max().item<double>():G3}");
    }
}
