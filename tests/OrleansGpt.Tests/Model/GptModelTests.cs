using OrleansGpt.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

public sealed class GptModelTests
{
    [Fact]
    public void Gpt2SmallWithTheOriginalVocabularyHasHuggingFacesParameterCount()
    {
        var config = GptConfig.Small with { VocabSize = 50257 };
        Assert.Equal(124_439_808, config.ParameterCount);
        using var model = new Gpt(config);
        long counted = model.parameters().Sum(p => p.NumberOfElements);
        Assert.Equal(124_439_808, counted); // the output layer is tied to wte, so it adds nothing
    }

    [Theory]
    [InlineData("distil", 6, 768)]
    [InlineData("small", 12, 768)]
    [InlineData("medium", 24, 1024)]
    [InlineData("large", 36, 1280)]
    [InlineData("xl", 48, 1600)]
    public void PresetsHaveTheGpt2FamilysShapes(string name, int layers, int width)
    {
        var config = GptConfig.FromPreset(name);
        Assert.Equal((layers, width), (config.Layers, config.Embedding));
        Assert.Equal(0, config.Embedding % config.Heads);
        Assert.Equal(50258, config.VocabSize);
    }

    [Fact]
    public void UnknownPresetIsRejectedWithTheChoices()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => GptConfig.FromPreset("huge"));
        Assert.Contains("tiny, distil, small, medium, large, xl", e.Message);
    }

    [Fact]
    public void DecodingWithTheKvCacheGivesTheFullForwardsLogits()
    {
        using var model = TestModels.Random();
        int[] ids = [5, 17, 200, 42, 299, 0, 7, 7, 128, 64, 3, 250];
        using var _ = no_grad();
        using var full = model.forward(TestModels.Ids(ids)); // (1, T, V)

        // Prefill 4 tokens, then a chunk of 3 (the explicit-mask path), then one token at a time.
        using var cache = model.NewCache(1, ids.Length);
        var chunks = new[] { ids[..4], ids[4..7] }.Concat(ids[7..].Select(i => new[] { i }));
        int position = 0;
        foreach (var chunk in chunks)
        {
            using var logits = model.forward(TestModels.Ids(chunk), cache); // (1, t, V)
            for (int t = 0; t < chunk.Length; t++)
            {
                var expected = TestModels.Values(full[0, position + t]);
                var actual = TestModels.Values(logits[0, t]);
                Assert.True(MaxAbsDiff(expected, actual) < 1e-4f, $"position {position + t}: max |diff| {MaxAbsDiff(expected, actual)}");
            }
            position += chunk.Length;
        }
        Assert.Equal(ids.Length, cache.Length);
    }

    [Fact]
    public void NextTokenLogitsForOneRowMatchTheBatchedOutputLayer()
    {
        // One row goes through a (C, V) copy of wte; several rows through linear. Both must agree.
        using var model = TestModels.Random();
        using var _ = no_grad();
        using var single = model.NextTokenLogits(TestModels.Ids(1, 2, 3));
        using var batch = model.NextTokenLogits(tensor(new long[] { 1, 2, 3, 1, 2, 3 }, [2L, 3]));
        Assert.True(MaxAbsDiff(TestModels.Values(single[0]), TestModels.Values(batch[1])) < 1e-5f);
    }

    [Fact]
    public void DecodingFollowsWeightsChangedAfterAnEarlierDecode()
    {
        // Decode products read packed copies of the weights, made on the first decode step. A hot swap copies new
        // weights in place and then drops the copies (InvalidateDerivedWeights); training switches modes, which drops
        // them too. A stale copy would go on decoding with the old model.
        using var model = TestModels.Random(seed: 1);
        using var swapped = TestModels.Random(seed: 2);
        using var trained = TestModels.Random(seed: 3);
        using var _ = no_grad();
        using var ids = TestModels.Ids(3, 1, 4, 1, 5);
        using var before = model.NextTokenLogits(ids); // packs the copies
        Assert.False(before.eq(swapped.NextTokenLogits(ids)).all().item<bool>(), "two seeds gave the same logits");

        CopyWeights(swapped, model);
        model.InvalidateDerivedWeights();
        Assert.True(model.NextTokenLogits(ids).eq(swapped.NextTokenLogits(ids)).all().item<bool>(), "stale after a hot swap");

        model.train();
        CopyWeights(trained, model);
        model.eval();
        Assert.True(model.NextTokenLogits(ids).eq(trained.NextTokenLogits(ids)).all().item<bool>(), "stale after training");

        static void CopyWeights(Gpt from, Gpt to)
        {
            var source = from.state_dict();
            foreach (var (name, p) in to.named_parameters())
                p.copy_(source[name]);
        }
    }

    [Fact]
    public void SequencesLongerThanTheBlockSizeAreRefusedWithTheLengths()
    {
        using var model = TestModels.Random();
        using var _ = no_grad();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => model.forward(TestModels.Ids(new int[65])));
        Assert.Contains("length 65, block size is only 64", e.Message);
    }

    [Fact]
    public void Bf16LogitsStayCloseToFp32()
    {
        using var model = TestModels.Random();
        int[] ids = [1, 2, 3, 4, 5, 6];
        using var _ = no_grad();
        var fp32 = TestModels.Values(model.NextTokenLogits(TestModels.Ids(ids)));
        model.to(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, model.Dtype);
        var bf16 = TestModels.Values(model.NextTokenLogits(TestModels.Ids(ids)));
        // bf16 keeps 8 significant bits: logits of magnitude ~1 agree to a few hundredths.
        Assert.True(MaxAbsDiff(fp32, bf16) < 0.1f, $"max |diff| {MaxAbsDiff(fp32, bf16)}");
    }

    [Fact]
    public void PrecisionFallsBackToFp32OnlyWhenTheCpuLacksBf16()
    {
        var (precision, fallback) = PrecisionSupport.Resolve(Precision.Bf16, CPU);
        Assert.Equal(PrecisionSupport.CpuHasNativeBf16 ? Precision.Bf16 : Precision.Fp32, precision);
        Assert.Equal(PrecisionSupport.CpuHasNativeBf16, fallback is null);
        Assert.Equal((Precision.Fp32, (string?)null), PrecisionSupport.Resolve(Precision.Fp32, CPU));
        Assert.Throws<ArgumentOutOfRangeException>(() => PrecisionSupport.Parse("fp8"));
    }

    internal static float MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        float max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }
}
