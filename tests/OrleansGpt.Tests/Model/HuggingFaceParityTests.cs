using System.Text.Json;
using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>
/// Parity with Hugging Face transformers 5.17 on fixtures it produced (Fixtures/make_hf_parity_fixtures.py,
/// run once on a machine with torch and transformers): a tiny random GPT2LMHeadModel saved by save_pretrained,
/// with its logits and greedy tokens; and a checkpoint saved by this project, with the logits transformers
/// computed after loading it with from_pretrained.
/// </summary>
[Trait("Category", KernelPaths.Category)]
public sealed class HuggingFaceParityTests
{
    // Both implementations compute in fp32 with differently ordered reductions; logits are O(1).
    private const float Tolerance = 1e-4f;
    private static readonly string s_fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");

    [Fact]
    public void ACheckpointSavedByTransformersGivesTransformersLogits()
    {
        var expected = Read(Path.Combine(s_fixtures, "hf-tiny", "expected.json"));
        using var model = Gpt2Checkpoint.Load(Path.Combine(s_fixtures, "hf-tiny"));
        AssertLogits(model, expected.InputIds, expected.Logits);
    }

    [Fact]
    public void GreedyDecodingWithTheKvCacheMatchesTransformersTokenForToken()
    {
        var expected = Read(Path.Combine(s_fixtures, "hf-tiny", "expected.json"));
        using var model = Gpt2Checkpoint.Load(Path.Combine(s_fixtures, "hf-tiny"));
        var sampler = new TokenSampler(SamplingSettings.Greedy with { MaxNewTokens = expected.GreedyTokens!.Length });
        var tokens = new TextGenerator(model).GenerateBatch([expected.GreedyPrompt!], [sampler]).Select(step => step[0].Token).ToArray();
        Assert.Equal(expected.GreedyTokens, tokens);
    }

    [Fact]
    public void TransformersReadsOurCheckpointAsWeDo()
    {
        var byTransformers = Read(Path.Combine(s_fixtures, "ours-tiny", "transformers_logits.json"));
        using var model = Gpt2Checkpoint.Load(Path.Combine(s_fixtures, "ours-tiny"));
        AssertLogits(model, byTransformers.InputIds, byTransformers.Logits);
    }

    private static void AssertLogits(Gpt model, int[] ids, float[][] expected)
    {
        using var _ = no_grad();
        using var logits = model.forward(TestModels.Ids(ids)); // (1, T, V)
        for (int t = 0; t < ids.Length; t++)
        {
            float diff = GptModelTests.MaxAbsDiff(expected[t], TestModels.Values(logits[0, t]));
            Assert.True(diff < Tolerance, $"position {t}: max |diff| {diff} vs transformers");
        }
    }

    private sealed record Fixture(int[] InputIds, float[][] Logits, int[]? GreedyPrompt, int[]? GreedyTokens);

    private static Fixture Read(string path) =>
        JsonSerializer.Deserialize<Fixture>(File.ReadAllText(path), new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!;
}
