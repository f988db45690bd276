using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>
/// A decode step's own attention: exact attention (to fp32 rounding, or one bf16 rounding) over each row's own
/// positions only, the new key and value written where the row's position says and nowhere else, idle rows left
/// alone, a row's result independent of the rows beside it.
/// </summary>
[Trait("Category", KernelPaths.Category)]
public sealed class DecodeAttentionTests
{
    // 3 heads, 40 positions a slot, 5 slots of which the step uses 4: one at position 0 (only its own new key), one in
    // the middle, one idle, one at the last position.
    private const int Heads = 3, Capacity = 40, Slots = 5;
    private static readonly int[] s_positions = [0, 17, -1, Capacity - 1];

    [Theory]
    [InlineData(ScalarType.Float32, 64)]
    [InlineData(ScalarType.BFloat16, 64)]
    [InlineData(ScalarType.Float32, 96)]
    [InlineData(ScalarType.BFloat16, 16)] // the test models' heads
    [InlineData(ScalarType.Float32, 16)]
    public void GivesExactAttentionOverEachRowsOwnPositions(ScalarType dtype, int headSize)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (qkv, keys, values) = Operands(dtype, headSize, seed: headSize);
        Assert.True(DecodeAttention.Applies(qkv, dtype, headSize));
        var expected = Exact(qkv, keys, values, s_positions).to(dtype).to(ScalarType.Float64);

        var y = DecodeAttention.Step(qkv, keys, values, s_positions);

        Assert.Equal([s_positions.Length, Heads * headSize], y.shape);
        Assert.Equal(dtype, y.dtype);
        var error = (y.to(ScalarType.Float64) - expected).abs();
        // fp32: summation order and exp's last bit. bf16: the fp32 result may round to the neighbouring bf16 (2^-8 relative).
        var allowed = dtype == ScalarType.Float32 ? 1e-5 + 1e-5 * expected.abs() : 1e-3 + expected.abs() / 128;
        Assert.True((error <= allowed).all().item<bool>(), $"largest error {error.max().item<double>():G3}");
        Assert.True((y[2] == 0).all().item<bool>(), "the idle row's output is not zeros");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void WritesEachNewKeyAndValueAtItsRowsPositionAndNothingElse(ScalarType dtype)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (qkv, keys, values) = Operands(dtype, 64, seed: 7);
        var expectedKeys = keys.clone();
        var expectedValues = values.clone();
        long c = Heads * 64;
        for (int r = 0; r < s_positions.Length; r++)
        {
            if (s_positions[r] < 0) continue;
            expectedKeys[r, TensorIndex.Colon, s_positions[r]] = qkv[r].narrow(0, c, c).view(Heads, 64);
            expectedValues[r, TensorIndex.Colon, s_positions[r]] = qkv[r].narrow(0, 2 * c, c).view(Heads, 64);
        }

        DecodeAttention.Step(qkv, keys, values, s_positions);

        Assert.True(keys.eq(expectedKeys).all().item<bool>(), "keys differ from the cache with each row's new key at its position");
        Assert.True(values.eq(expectedValues).all().item<bool>(), "values differ from the cache with each row's new value at its position");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void ARowsResultDoesNotDependOnTheRowsBesideIt(ScalarType dtype)
    {
        // A seeded request must sample the same alone and under load: its attention gives the same bits either way.
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (qkv, keys, values) = Operands(dtype, 64, seed: 11);
        var batch = DecodeAttention.Step(qkv, keys.clone(), values.clone(), s_positions);
        for (int r = 0; r < s_positions.Length; r++)
        {
            var alone = DecodeAttention.Step(qkv.narrow(0, r, 1), keys.narrow(0, r, 1).clone(), values.narrow(0, r, 1).clone(), [s_positions[r]]);
            Assert.True(alone.eq(batch.narrow(0, r, 1)).all().item<bool>(), $"row {r} differs alone and in the batch");
        }
    }

    [Fact]
    public void ANaNInARowsCachedKeysReachesThatRowsOutputOnly()
    {
        // The engine fails a request whose logits are not finite; attention must neither hide a NaN nor spread it.
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (qkv, keys, values) = Operands(ScalarType.BFloat16, 64, seed: 5);
        keys[1, 0, 3, 10] = tensor(float.NaN).to(ScalarType.BFloat16); // row 1 (position 17) reads position 3 in head 0
        var y = DecodeAttention.Step(qkv, keys, values, s_positions).to(ScalarType.Float32);
        Assert.True(y[1].narrow(0, 0, 64).isnan().all().item<bool>(), "head 0 of row 1 should be NaN");
        Assert.True(y[1].narrow(0, 64, 2 * 64).isfinite().all().item<bool>(), "row 1's other heads should be finite");
        Assert.True(y[0].isfinite().all().item<bool>() && y[3].isfinite().all().item<bool>(), "other rows should be finite");
    }

    [Fact]
    public void AppliesOnlyToInferenceInFp32OrBf16WithHeadsOfWholeVectors()
    {
        using var scope = NewDisposeScope();
        var (qkv, _, _) = Operands(ScalarType.Float32, 64, seed: 1);
        using (no_grad())
        {
            Assert.Equal(DecodeKernels.IsSupported, DecodeAttention.Applies(qkv, ScalarType.Float32, 64));
            Assert.False(DecodeAttention.Applies(qkv, ScalarType.BFloat16, 64)); // the cache's dtype must be the projections'
            Assert.False(DecodeAttention.Applies(qkv.to(ScalarType.Float16), ScalarType.Float16, 64));
            Assert.False(DecodeAttention.Applies(qkv, ScalarType.Float32, 40)); // not whole vectors of 16
        }
        Assert.False(DecodeAttention.Applies(qkv, ScalarType.Float32, 64)); // autograd on: training goes through libtorch
    }

    [Fact]
    public void PositionsAndShapesThatDoNotFitAreRefused()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (qkv, keys, values) = Operands(ScalarType.Float32, 64, seed: 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeAttention.Step(qkv, keys, values, [0, 1, 2, Capacity]));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeAttention.Step(qkv, keys, values, [0, 1, -2, 3]));
        Assert.Throws<ArgumentException>(() => DecodeAttention.Step(qkv, keys, values, [0, 1, 2])); // a position per row
        Assert.Throws<ArgumentException>(() => DecodeAttention.Step(qkv.narrow(1, 0, 64), keys, values, s_positions));
        Assert.Throws<ArgumentException>(() => DecodeAttention.Step(qkv, keys, values.to(ScalarType.BFloat16), s_positions));
        Assert.Throws<ArgumentException>(() => DecodeAttention.Step(qkv, keys.narrow(0, 0, 3), values.narrow(0, 0, 3), s_positions)); // fewer slots than rows
    }

    /// <summary>Projections (R, 3C) and a layer's caches (S, nh, P, hs) in <paramref name="dtype"/>. Each row's cached
    /// positions before its own are random; those after it hold 1e4, which a kernel reading past the row's position would
    /// turn into a different answer.</summary>
    private static (Tensor Qkv, Tensor Keys, Tensor Values) Operands(ScalarType dtype, int headSize, int seed)
    {
        using var g = new Generator((ulong)seed);
        var qkv = randn([s_positions.Length, 3L * Heads * headSize], generator: g).to(dtype);
        var keys = randn([Slots, Heads, Capacity, headSize], generator: g);
        var values = randn([Slots, Heads, Capacity, headSize], generator: g);
        for (int r = 0; r < s_positions.Length; r++)
        {
            int from = Math.Max(0, s_positions[r]);
            keys[r].narrow(1, from, Capacity - from).fill_(1e4);
            values[r].narrow(1, from, Capacity - from).fill_(1e4);
        }
        return (qkv, keys.to(dtype), values.to(dtype));
    }

    /// <summary>Attention in float64 for each row with a position: its query against its cached positions before that
    /// position and its new key and value at it (rows without a position give zeros).</summary>
    private static Tensor Exact(Tensor qkv, Tensor keys, Tensor values, int[] positions)
    {
        long hs = keys.shape[3], c = Heads * hs;
        var rows = new List<Tensor>();
        for (int r = 0; r < positions.Length; r++)
        {
            int p = positions[r];
            var row = qkv[r].to(ScalarType.Float64);
            if (p < 0)
            {
                rows.Add(zeros(c, ScalarType.Float64));
                continue;
            }
            var q = row.narrow(0, 0, c).view(Heads, 1, hs);
            var k = cat([keys[r].narrow(1, 0, p).to(ScalarType.Float64), row.narrow(0, c, c).view(Heads, 1, hs)], 1);         // (nh, p + 1, hs)
            var v = cat([values[r].narrow(1, 0, p).to(ScalarType.Float64), row.narrow(0, 2 * c, c).view(Heads, 1, hs)], 1);
            var weights = softmax(matmul(q, k.transpose(1, 2)) / Math.Sqrt(hs), -1); // (nh, 1, p + 1)
            rows.Add(matmul(weights, v).reshape(c));
        }
        return stack(rows);
    }
}
