using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>
/// The decode step's own matrix products: the same numbers as libtorch (to fp32 accumulation order, or to one bf16
/// rounding), every column including the ragged end past the last 64-column tile, a row's result independent of the
/// rows beside it, and correct under concurrent callers.
/// </summary>
[Trait("Category", KernelPaths.Category)]
public sealed class SmallBatchMatMulTests
{
    // 70 inputs and 229 outputs: two parts of whole tiles on a two-core machine, and 37 ragged columns at the end.
    private const int In = 70, Out = 229;

    [Theory]
    [InlineData(ScalarType.Float32, 1, true)]
    [InlineData(ScalarType.Float32, 3, false)]
    [InlineData(ScalarType.Float32, 8, true)]
    [InlineData(ScalarType.BFloat16, 1, true)]
    [InlineData(ScalarType.BFloat16, 2, false)]
    [InlineData(ScalarType.BFloat16, 5, true)]
    [InlineData(ScalarType.BFloat16, 8, true)]
    [InlineData(ScalarType.Float32, 24, true)]
    [InlineData(ScalarType.BFloat16, 23, false)]
    public void GivesLibTorchsProductInEveryColumn(ScalarType dtype, int rows, bool withBias) =>
        AssertGivesLibTorchsProduct(dtype, rows, withBias);

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void GivesLibTorchsProductAtTheMostRowsThisCpuTakes(ScalarType dtype)
    {
        // 24 rows with AVX-512 (where libtorch's GEMM catches up), 64 elsewhere: the most rows' row groups and ragged end.
        AssertGivesLibTorchsProduct(dtype, SmallBatchMatMul.MaxRows(dtype), withBias: true);
        AssertGivesLibTorchsProduct(dtype, SmallBatchMatMul.MaxRows(dtype) - 1, withBias: false);
    }

    private static void AssertGivesLibTorchsProduct(ScalarType dtype, int rows, bool withBias)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (x, w, b) = Operands(dtype, rows, seed: rows);
        Assert.True(SmallBatchMatMul.Applies(rows, x, w));

        var y = SmallBatchMatMul.Forward(x, w, withBias ? b : null);

        // The exact product in float64, then rounded to the dtype once.
        var exact = matmul(x.to(ScalarType.Float64), w.to(ScalarType.Float64));
        if (withBias) exact += b.to(ScalarType.Float64);
        Assert.Equal([rows, Out], y.shape);
        Assert.Equal(dtype, y.dtype);
        var expected = exact.to(dtype).to(ScalarType.Float64);
        var error = (y.to(ScalarType.Float64) - expected).abs();
        // fp32: accumulation order only. bf16: the fp32 sum may round to the neighbouring bf16 (2^-8 relative).
        var allowed = dtype == ScalarType.Float32 ? 1e-4 + 1e-5 * expected.abs() : 1e-3 + expected.abs() / 128;
        Assert.True((error <= allowed).all().item<bool>(), $"largest error {error.max().item<double>():G3}");
        // The last columns come from the ragged-end path; a dropped or misplaced column would be far off.
        Assert.True((error.narrow(1, Out - 37, 37) <= allowed.narrow(1, Out - 37, 37)).all().item<bool>());
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void ARowsResultDoesNotDependOnTheRowsBesideIt(ScalarType dtype)
    {
        // The engine decodes a request alone or beside others; the same row must give the same bits either way, or a
        // seeded request would sample differently under load.
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (x, w, b) = Operands(dtype, rows: 7, seed: 3);
        var batch = SmallBatchMatMul.Forward(x, w, b);
        for (int r = 0; r < 7; r++)
        {
            var alone = SmallBatchMatMul.Forward(x.narrow(0, r, 1), w, b);
            Assert.True(alone.eq(batch.narrow(0, r, 1)).all().item<bool>(), $"row {r} differs alone and in the batch");
        }
    }

    [Fact]
    public void ANaNInARowReachesThatRowsOutputsOnly()
    {
        // The engine fails a request whose logits are not finite; the product must not hide a NaN or spread it.
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (x, w, b) = Operands(ScalarType.BFloat16, rows: 3, seed: 4);
        x[1, 10] = tensor(float.NaN).to(ScalarType.BFloat16);
        var y = SmallBatchMatMul.Forward(x, w, b).to(ScalarType.Float32);
        Assert.True(y[1].isnan().all().item<bool>());
        Assert.True(y[0].isfinite().all().item<bool>() && y[2].isfinite().all().item<bool>());
    }

    [Fact]
    public async Task ConcurrentCallersEachGetTheirOwnProduct()
    {
        // Two models on two engine threads share the helper threads: one caller runs on them, the other alone.
        var work = Enumerable.Range(0, 4).Select(seed =>
        {
            using var _ = no_grad();
            var (x, w, b) = Operands(seed % 2 == 0 ? ScalarType.Float32 : ScalarType.BFloat16, rows: 1 + seed, seed: 10 + seed);
            var expected = SmallBatchMatMul.Forward(x, w, b);
            return (x, w, b, expected);
        }).ToArray();

        var mismatches = await Task.WhenAll(work.Select(item => Task.Run(() =>
        {
            using var _ = no_grad();
            int bad = 0;
            for (int i = 0; i < 200; i++)
            {
                using var y = SmallBatchMatMul.Forward(item.x, item.w, item.b);
                if (!y.eq(item.expected).all().item<bool>()) bad++;
                if (i % 50 == 0) Thread.Sleep(2); // let the helpers park, so waking them is exercised too
            }
            return bad;
        })));
        Assert.All(mismatches, bad => Assert.Equal(0, bad));
    }

    [Fact]
    public void AppliesOnlyToInferenceOnAFewRowsOfFp32OrBf16()
    {
        using var scope = NewDisposeScope();
        var (x, w, _) = Operands(ScalarType.Float32, rows: 2, seed: 5);
        using (no_grad())
        {
            Assert.Equal(DecodeKernels.IsSupported, SmallBatchMatMul.Applies(2, x, w));
            Assert.False(SmallBatchMatMul.Applies(SmallBatchMatMul.MaxRows(x.dtype) + 1, x, w)); // a GEMM that blocks for reuse
            Assert.False(SmallBatchMatMul.Applies(SmallBatchMatMul.MostRows + 1, x, w));
            Assert.True(SmallBatchMatMul.MaxRows(x.dtype) is 24 or SmallBatchMatMul.MostRows);
            Assert.False(SmallBatchMatMul.Applies(2, x.to(ScalarType.Float16), w.to(ScalarType.Float16)));
            Assert.False(SmallBatchMatMul.Applies(2, x, w.to(ScalarType.BFloat16)));
        }
        Assert.False(SmallBatchMatMul.Applies(2, x, w)); // autograd on: training must go through libtorch's ops
    }

    [Theory]
    [InlineData(ScalarType.Float32, 1, Out)]     // whole panels and a ragged rest at every width
    [InlineData(ScalarType.BFloat16, 3, Out)]
    [InlineData(ScalarType.BFloat16, 8, 256)]    // whole panels only
    [InlineData(ScalarType.Float32, 2, 10)]      // fewer columns than one panel: all of them in the rest
    [InlineData(ScalarType.BFloat16, 1, 10)]
    public void PanelsGiveTheInOutLayoutsBitsInEveryColumn(ScalarType dtype, int rows, int outFeatures)
    {
        // Decode steps read packed weights, tests and prefills the (in, out) ones: the two must be the same product,
        // to the bit, or a request would sample differently from the reference generator.
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (x, w, b) = Operands(dtype, rows, seed: 20 + rows, outFeatures);
        var inOut = SmallBatchMatMul.Forward(x, w, b);
        using var packed = PackedWeight.Pack(w);
        Assert.Equal((In, (long)outFeatures, PackedWeight.PanelWidth), (packed.In, packed.Out, packed.Panel));
        Assert.True(SmallBatchMatMul.Forward(x, packed, b).eq(inOut).all().item<bool>(), "packed and (in, out) products differ");
        // The output layer packs wte's transposed view: a weight with other strides packs to the same panels.
        using var fromView = PackedWeight.Pack(w.t().contiguous().t());
        Assert.True(SmallBatchMatMul.Forward(x, fromView, b).eq(inOut).all().item<bool>(), "packing a strided view differs");
    }

    [Fact]
    public void APackedCopyKnowsWhichWeightsItStandsFor()
    {
        using var scope = NewDisposeScope();
        var (_, w, _) = Operands(ScalarType.Float32, rows: 1, seed: 7);
        using var packed = PackedWeight.Pack(w);
        Assert.True(packed.Matches(w));
        Assert.False(packed.Matches(w.to(ScalarType.BFloat16)));  // the model was cast after packing
        Assert.False(packed.Matches(w.narrow(1, 0, Out - 1)));
        using var _ = no_grad();
        Assert.Throws<ArgumentException>(() => SmallBatchMatMul.Forward(randn(1, In - 1), packed, null));
        Assert.Throws<ArgumentException>(() => SmallBatchMatMul.Forward(randn(1, In).to(ScalarType.BFloat16), packed, null));
    }

    [Fact]
    public void ShapesThatDoNotMultiplyAreRefused()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (x, w, b) = Operands(ScalarType.Float32, rows: 2, seed: 6);
        Assert.Throws<ArgumentException>(() => SmallBatchMatMul.Forward(x, w.narrow(0, 0, In - 1), b));
        Assert.Throws<ArgumentException>(() => SmallBatchMatMul.Forward(x, w, b.narrow(0, 0, Out - 1)));
        Assert.Throws<ArgumentException>(() => SmallBatchMatMul.Forward(x, w.t(), b)); // not contiguous (and not (in, out))
    }

    /// <summary>Inputs (rows, In), weights (In, Out) and bias (Out), random, in <paramref name="dtype"/>.</summary>
    private static (Tensor X, Tensor W, Tensor B) Operands(ScalarType dtype, int rows, int seed, int outFeatures = Out)
    {
        using var g = new Generator((ulong)seed);
        return (randn([rows, In], generator: g).to(dtype), randn([In, outFeatures], generator: g).to(dtype),
            randn([outFeatures], generator: g).to(dtype));
    }
}
