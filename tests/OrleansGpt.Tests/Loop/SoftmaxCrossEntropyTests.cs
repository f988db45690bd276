using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Loop;

/// <summary>
/// Training's output-layer loss kernel: libtorch's cross-entropy and its gradient (to fp32 rounding, or one bf16
/// rounding), every column including the ragged end past the last 16, and targets that do not fit refused.
/// </summary>
[Trait("Category", OrleansGpt.Tests.Model.KernelPaths.Category)]
public sealed class SoftmaxCrossEntropyTests
{
    // 5 rows of 300 logits: 18 whole vectors and a ragged end of 12.
    private const int Rows = 5, Vocab = 300;

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void GivesLibTorchsLossAndGradient(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(7);
        var logits = (randn([Rows, Vocab], generator: g) * 4).to(dtype);
        long[] targets = [0, 17, Vocab - 1, 150, Vocab - 5]; // the first column, the middle, the ragged end
        if (!SoftmaxCrossEntropy.Applies(logits))
            return; // training goes through libtorch's cross_entropy on such a CPU
        const float scale = 0.25f;

        // libtorch, in float64 from the same values.
        var exact = logits.to(ScalarType.Float64).detach().requires_grad_(true);
        var loss = nn.functional.cross_entropy(exact, tensor(targets), reduction: nn.Reduction.Sum);
        (loss * scale).backward();
        var expectedGrad = exact.grad!.to(dtype).to(ScalarType.Float64);

        var buffer = logits.clone();
        double sum = SoftmaxCrossEntropy.LossAndGradient(buffer, targets, scale);

        Assert.Equal(loss.item<double>(), sum, 4);
        var error = (buffer.to(ScalarType.Float64) - expectedGrad).abs();
        var allowed = dtype == ScalarType.Float32 ? 1e-7 + 1e-5 * expectedGrad.abs() : 1e-6 + expectedGrad.abs() / 128;
        Assert.True((error <= allowed).all().item<bool>(), $"largest gradient error {error.max().item<double>():G3}");
        Assert.True((error.narrow(1, Vocab - 12, 12) <= allowed.narrow(1, Vocab - 12, 12)).all().item<bool>(), "the ragged end's gradient is off");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void ARowWithoutATargetAddsNoLossAndNoGradient(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        var logits = (randn([3, Vocab], generator: g) * 4).to(dtype);
        if (!SoftmaxCrossEntropy.Applies(logits)) return;
        var alone = logits.narrow(0, 0, 1).clone();
        double expected = SoftmaxCrossEntropy.LossAndGradient(alone, [17], 1f);

        var buffer = logits.clone();
        double sum = SoftmaxCrossEntropy.LossAndGradient(buffer, [17, SoftmaxCrossEntropy.NoTarget, SoftmaxCrossEntropy.NoTarget], 1f);

        Assert.Equal(expected, sum, 12);
        Assert.True(buffer.narrow(0, 0, 1).eq(alone).all().item<bool>(), "the row with a target changed");
        Assert.Equal(0.0, buffer.narrow(0, 1, 2).abs().sum().to(ScalarType.Float64).item<double>()); // every column, the ragged end too
    }

    [Fact]
    public void TargetsThatDoNotFitAreRefused()
    {
        using var scope = NewDisposeScope();
        var logits = zeros(2, Vocab);
        if (!SoftmaxCrossEntropy.Applies(logits)) return;
        Assert.Throws<ArgumentOutOfRangeException>(() => SoftmaxCrossEntropy.LossAndGradient(logits, [0, Vocab], 1f));
        Assert.Throws<ArgumentOutOfRangeException>(() => SoftmaxCrossEntropy.LossAndGradient(logits, [-2, 0], 1f));
        Assert.Throws<ArgumentException>(() => SoftmaxCrossEntropy.LossAndGradient(logits, [0], 1f)); // a target per row
        Assert.Throws<ArgumentException>(() => SoftmaxCrossEntropy.LossAndGradient(logits.t(), [0, 1], 1f)); // not contiguous
    }
}
