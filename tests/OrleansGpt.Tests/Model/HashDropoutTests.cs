using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>
/// Dropout with a hashed mask: each element kept and scaled by 1/(1 - p) or zeroed exactly as
/// <see cref="HashDropout.Keeps"/> says, the same mask in the backward pass, the requested share dropped.
/// </summary>
[Trait("Category", KernelPaths.Category)]
public sealed class HashDropoutTests
{
    [Theory]
    [InlineData(ScalarType.Float32, 0.1)]
    [InlineData(ScalarType.BFloat16, 0.1)]
    [InlineData(ScalarType.Float32, 0.5)]
    public void KeepsAndScalesExactlyTheElementsTheMaskSaysForwardAndBackward(ScalarType dtype, double dropout)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(5);
        // 3 x 70,001 elements: parts for both threads and a ragged end past the last whole vector.
        var x = (randn([3, 70_001], generator: g) + 3).to(dtype).requires_grad_(true);
        if (!HashDropout.Applies(x)) return; // libtorch's dropout on such a CPU
        const ulong seed = 99;

        var y = HashDropout.Apply(x, dropout, seed);
        var outputGrad = randn([3, 70_001], generator: g).to(dtype);
        y.backward([outputGrad]);

        var keep = new float[x.numel()];
        for (long i = 0; i < keep.Length; i++)
            keep[i] = HashDropout.Keeps(seed, i, dropout) ? (float)(1 / (1 - dropout)) : 0f;
        var mask = tensor(keep).view(3, 70_001);
        var expected = (x.detach().to(ScalarType.Float32) * mask).to(dtype);
        var expectedGrad = (outputGrad.to(ScalarType.Float32) * mask).to(dtype);
        Assert.True(y.eq(expected).all().item<bool>(), "the output differs from x x mask");
        Assert.True(x.grad!.eq(expectedGrad).all().item<bool>(), "the gradient differs from dy x mask");
        double dropped = (mask == 0).to(ScalarType.Float64).mean().item<double>();
        Assert.InRange(dropped, dropout - 0.005, dropout + 0.005); // 210,003 draws
    }

    [Fact]
    public void DifferentSeedsDropDifferentElements()
    {
        var a = Enumerable.Range(0, 256).Select(i => HashDropout.Keeps(1, i, 0.5));
        var b = Enumerable.Range(0, 256).Select(i => HashDropout.Keeps(2, i, 0.5));
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void TheModelsDropoutIsOnlyActiveInTraining()
    {
        using var scope = NewDisposeScope();
        var x = ones(4, 64);
        var dropout = new OrleansGpt.Training.Model.GptDropout(0.5);
        dropout.eval();
        Assert.True(dropout.forward(x).eq(x).all().item<bool>());
        dropout.train();
        var y = dropout.forward(x);
        Assert.True((y == 0).any().item<bool>() && (y == 2).any().item<bool>(), "training mode should drop and scale");
        Assert.Throws<ArgumentOutOfRangeException>(() => HashDropout.Apply(x, 1.0));
    }
}
