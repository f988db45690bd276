using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>
/// Training's own attention: causal attention with dropout on the weights, forward and backward, against the same
/// attention written out in float64 with the mask <see cref="CausalAttention.Keeps"/> describes; sequences that end
/// inside a block and span several, heads of 16 and 64 and 80.
/// </summary>
[Trait("Category", KernelPaths.Category)]
public sealed class CausalAttentionTests
{
    private const int Sequences = 2, Heads = 3;

    [Theory]
    [InlineData(ScalarType.Float32, 64, 150, 0.0)]   // three blocks of 64, the last one ragged
    [InlineData(ScalarType.Float32, 64, 150, 0.25)]
    [InlineData(ScalarType.BFloat16, 64, 70, 0.1)]
    [InlineData(ScalarType.Float32, 16, 9, 0.5)]     // the test models' heads, one short block
    [InlineData(ScalarType.Float32, 80, 64, 0.1)]    // a head of five vectors: the one-vector tail of the products
    public void MatchesAttentionWrittenOutWithTheSameMask(ScalarType dtype, int headSize, int length, double dropout)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)(length + headSize));
        int width = Heads * headSize;
        var qkv = (randn([Sequences, length, 3 * width], generator: g) * 1.5).to(dtype);
        Assert.True(CausalAttention.Applies(qkv, Heads), $"the kernel takes these projections on the {Simd.Path} path");
        const ulong seed = 12345;
        var outputGrad = randn([Sequences, length, width], generator: g).to(dtype);

        var input = qkv.detach().requires_grad_(true);
        var y = CausalAttention.Attend(input, Heads, dropout, seed);
        y.backward([outputGrad]);

        var exact = qkv.to(ScalarType.Float64).detach().requires_grad_(true);
        var expected = Reference(exact, headSize, dropout, seed);
        expected.backward([outputGrad.to(ScalarType.Float64)]);

        Assert.Equal([Sequences, length, width], y.shape);
        Assert.Equal(dtype, y.dtype);
        AssertClose(expected, y, dtype, "output");
        AssertClose(exact.grad!, input.grad!, dtype, "gradient");
    }

    [Fact]
    public void DropsTheRequestedShareOfWeightsAndNoneWithoutDropout()
    {
        int kept = 0, total = 0;
        for (int row = 0; row < 200; row++)
            for (int key = 0; key <= row; key++, total++)
                if (CausalAttention.Keeps(7, 5, row, key, 200, 0.1)) kept++;
        Assert.InRange(kept / (double)total, 0.89, 0.91); // 20,100 draws: 3 standard deviations is 0.6%
        Assert.True(CausalAttention.Keeps(7, 5, 3, 2, 200, 0.0));
        Assert.NotEqual(Enumerable.Range(0, 64).Select(k => CausalAttention.Keeps(7, 0, 63, k, 64, 0.5)),
                        Enumerable.Range(0, 64).Select(k => CausalAttention.Keeps(7, 1, 63, k, 64, 0.5))); // heads differ
    }

    [Fact]
    public void AFutureKeyCannotChangeAnEarlierPosition()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        var qkv = randn([1, 100, 3 * Heads * 16], generator: g);
        if (!CausalAttention.Applies(qkv, Heads)) return;
        var changed = qkv.clone();
        changed[0, 80] = randn([3 * Heads * 16], generator: g) * 10; // position 80's query, key and value
        using var _ = no_grad();
        var a = CausalAttention.Attend(qkv, Heads, 0.2, 9);
        var b = CausalAttention.Attend(changed, Heads, 0.2, 9);
        Assert.True(a.narrow(1, 0, 80).eq(b.narrow(1, 0, 80)).all().item<bool>(), "positions before 80 changed");
        Assert.False(a.narrow(1, 80, 1).eq(b.narrow(1, 80, 1)).all().item<bool>());
    }

    [Fact]
    public void RefusesWhatItCannotTake()
    {
        using var scope = NewDisposeScope();
        var qkv = zeros(1, 4, 3 * Heads * 16);
        if (!CausalAttention.Applies(qkv, Heads)) return;
        Assert.False(CausalAttention.Applies(zeros(1, 4, 3 * Heads * 8), Heads));                     // heads of 8
        Assert.False(CausalAttention.Applies(zeros(1, 4, 3 * Heads * 16, dtype: ScalarType.Float16), Heads));
        Assert.Throws<ArgumentOutOfRangeException>(() => CausalAttention.Attend(qkv, Heads, 1.0));
        Assert.Throws<ArgumentException>(() => CausalAttention.Attend(zeros(4, 3 * Heads * 16), Heads, 0.0)); // no batch dimension
    }

    /// <summary>softmax(q k^T / sqrt(hs) + causal) with the kernel's mask x 1/(1 - p), times v, heads side by side.</summary>
    private static Tensor Reference(Tensor qkv, int headSize, double dropout, ulong seed)
    {
        long B = qkv.shape[0], T = qkv.shape[1], C = Heads * headSize;
        var parts = qkv.split(C, dim: 2);
        Tensor Split(Tensor t) => t.view(B, T, Heads, headSize).transpose(1, 2); // (B, nh, T, hs)
        var q = Split(parts[0]); var k = Split(parts[1]); var v = Split(parts[2]);
        var scores = q.matmul(k.transpose(2, 3)) / Math.Sqrt(headSize); // (B, nh, T, T)
        var causal = ones(T, T, dtype: ScalarType.Bool).triu(1);
        var weights = scores.masked_fill(causal, double.NegativeInfinity).softmax(-1);
        var keep = new double[B * Heads * T * T];
        for (long pair = 0; pair < B * Heads; pair++)
            for (int row = 0; row < T; row++)
                for (int key = 0; key <= row; key++)
                    keep[(pair * T + row) * T + key] = CausalAttention.Keeps(seed, pair, row, key, (int)T, dropout) ? 1 / (1 - dropout) : 0;
        var mask = dropout == 0 ? ones(1, dtype: ScalarType.Float64) : tensor(keep).view(B, Heads, T, T);
        return (weights * mask).matmul(v).transpose(1, 2).reshape(B, T, C);
    }

    private static void AssertClose(Tensor expected, Tensor actual, ScalarType dtype, string what)
    {
        var e = dtype == ScalarType.BFloat16 ? expected.detach().to(dtype).to(ScalarType.Float64) : expected.detach();
        var error = (actual.detach().to(ScalarType.Float64) - e).abs();
        // bf16: the inputs and output are rounded, and the backward pass reads the rounded output (D = dO . O), so sums
        // that cancel keep an error of about one rounding of the largest value.
        var allowed = dtype == ScalarType.Float32 ? 1e-4 + 1e-4 * e.abs() : e.abs().max() / 128 + e.abs() / 64;
        Assert.True((error <= allowed).all().item<bool>(), $"{what}: largest error {error.max().item<double>():G3} (largest value {e.abs().max().item<double>():G3})");
    }
}
