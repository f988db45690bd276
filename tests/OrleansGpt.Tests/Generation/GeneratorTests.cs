using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Generation;

public sealed class GeneratorTests
{
    [Fact]
    public void CachedGreedyDecodingMatchesRecomputingTheWholeSequenceEachStep()
    {
        using var model = TestModels.Random();
        int[] prompt = [10, 20, 30, 40, 50];
        var sampler = new TokenSampler(SamplingSettings.Greedy with { MaxNewTokens = 20 });
        var cached = new TextGenerator(model).GenerateBatch([prompt], [sampler]).Select(s => s[0].Token).ToArray();

        var sequence = prompt.ToList();
        using (no_grad())
        {
            for (int i = 0; i < 20; i++)
            {
                using var logits = model.forward(TestModels.Ids([.. sequence])); // no cache
                sequence.Add((int)logits[0, -1].argmax().item<long>());
            }
        }
        Assert.Equal(sequence[prompt.Length..], cached);
    }

    [Fact]
    public void ASeededRequestGivesTheSameTokensAloneAndInABatch()
    {
        using var model = TestModels.Random();
        int[] mine = [1, 2, 3, 4], other = [9, 8, 7, 6];
        var settings = new SamplingSettings { TopP = 0.9, Temperature = 1.2, MaxNewTokens = 24, Seed = 42 };
        var generator = new TextGenerator(model);

        var alone = generator.GenerateBatch([mine], [new TokenSampler(settings)])
            .SelectMany(step => step).Select(t => t.Token).ToArray();
        var batched = generator.GenerateBatch([other, mine, other],
                [new TokenSampler(settings with { Seed = 1 }), new TokenSampler(settings), new TokenSampler(settings with { Seed = 2 })])
            .SelectMany(step => step).Where(t => t.Row == 1).Select(t => t.Token).ToArray();
        Assert.Equal(alone, batched);
        Assert.Equal(24, alone.Length);
    }

    [Fact]
    public void GenerationStopsAtEndOfTextAndReportsWhy()
    {
        // A model rigged so that <|endoftext|> is always the most likely token: the final LayerNorm outputs a
        // constant vector that only the end-of-text embedding row points along.
        var config = TestModels.Tiny with { VocabSize = Gpt2Tokenizer.VocabSize };
        using var model = TestModels.Random(config);
        using (no_grad())
        {
            var p = model.named_parameters().ToDictionary(x => x.name, x => x.parameter);
            p["ln_f.weight"].zero_();
            p["ln_f.bias"].fill_(1.0);
            model.TokenEmbedding.zero_();
            model.TokenEmbedding[Gpt2Tokenizer.EndOfText].fill_(1.0);
        }
        var steps = new TextGenerator(model).GenerateBatch([[1, 2, 3]], [new TokenSampler(SamplingSettings.Greedy)]).ToList();
        Assert.Single(steps);
        Assert.Equal(new GeneratedToken(0, Gpt2Tokenizer.EndOfText, FinishReason.Stop), steps[0][0]);
        Assert.Empty(new TextGenerator(model).Generate([1, 2, 3], new TokenSampler(SamplingSettings.Greedy)));
    }

    [Fact]
    public void GenerationStopsAtMaxTokensAndAtTheBlockSize()
    {
        using var model = TestModels.Random();
        var generator = new TextGenerator(model);
        var byMax = generator.GenerateBatch([[1, 2]], [new TokenSampler(SamplingSettings.Greedy with { MaxNewTokens = 5 })]).ToList();
        Assert.Equal(5, byMax.Count);
        Assert.Equal(FinishReason.Length, byMax[^1][0].Finish);

        // Block size 64: a 60-token prompt can be followed by 5 tokens (the last one is never fed back).
        var byBlock = generator.GenerateBatch([new int[60]], [new TokenSampler(SamplingSettings.Greedy with { MaxNewTokens = 100 })]).ToList();
        Assert.Equal(5, byBlock.Count);
        Assert.Equal(FinishReason.Length, byBlock[^1][0].Finish);
    }

    [Fact]
    public void RowsFinishIndependently()
    {
        using var model = TestModels.Random();
        var steps = new TextGenerator(model).GenerateBatch([[1, 2], [3, 4]],
            [new TokenSampler(SamplingSettings.Greedy with { MaxNewTokens = 2 }), new TokenSampler(SamplingSettings.Greedy with { MaxNewTokens = 6 })]).ToList();
        Assert.Equal(6, steps.Count);
        Assert.Equal(2, steps.SelectMany(s => s).Count(t => t.Row == 0));
        Assert.Equal(6, steps.SelectMany(s => s).Count(t => t.Row == 1));
    }

    [Fact]
    public void BadPromptsAreRejectedBeforeAnyWork()
    {
        using var model = TestModels.Random();
        var generator = new TextGenerator(model);
        TokenSampler Greedy() => new(SamplingSettings.Greedy);
        Assert.Contains("leaves no room", Assert.Throws<ArgumentOutOfRangeException>(() => generator.GenerateBatch([new int[64]], [Greedy()]).First()).Message);
        Assert.Contains("equal length", Assert.Throws<ArgumentException>(() => generator.GenerateBatch([[1], [1, 2]], [Greedy(), Greedy()]).First()).Message);
        Assert.Contains("outside the model's vocabulary", Assert.Throws<ArgumentOutOfRangeException>(() => generator.GenerateBatch([[300]], [Greedy()]).First()).Message);
        Assert.Throws<ArgumentException>(() => generator.GenerateBatch([[]], [Greedy()]).First());
        Assert.Throws<ArgumentException>(() => generator.GenerateBatch([[1]], [Greedy(), Greedy()]).First());
    }
}
