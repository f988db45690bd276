using OrleansGpt.Training.Data;
using OrleansGpt.Training.Evaluation;
using OrleansGpt.Training.Loop;
using OrleansGpt.Training.Text;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Evaluation;

public sealed class TitleGainTests
{
    [Fact]
    public void TheGainIsTheAbstractTokensLossWithoutTheTitleMinusWithIt()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path, papers: 40, words: 50);
        using var split = TokenSplit.Open(data, "train");
        const int block = 48; // shorter than most examples: only abstract tokens that fit after the whole prompt count

        var reports = Evaluator.TitleGain(new CopyingModel(), split, block, batchSize: 3);

        // The same sums worked out here from the copying rule, example by example.
        var expected = new Dictionary<string, (double With, double Without, long Tokens, double OpeningGain, long Opening, long Examples)>();
        foreach (var e in split.Examples)
        {
            int[] tokens = [.. split.Slice(e.Offset, e.Length).ToArray().Select(t => (int)t)];
            int prompt = Array.IndexOf(tokens, Gpt2Tokenizer.Separator) + 1;
            int[] tag = Gpt2Tokenizer.Shared.Encode(PaperFormat.Tag(e.Category));
            int[] bare = [.. tag, Gpt2Tokenizer.Separator, .. tokens[prompt..]];
            int count = Math.Min(tokens.Length - 1 - prompt, block - prompt); // the abstract without <|endoftext|>
            foreach (string name in new[] { PaperFormat.ArxivName(e.Category), "overall" })
            {
                var s = expected.GetValueOrDefault(name);
                s.Examples++;
                for (int j = 0; j < count; j++)
                {
                    double with = CopyingModel.Loss(tokens, prompt + j), without = CopyingModel.Loss(bare, tag.Length + 1 + j);
                    (s.With, s.Without, s.Tokens) = (s.With + with, s.Without + without, s.Tokens + 1);
                    if (j < Evaluator.OpeningTokens)
                        (s.OpeningGain, s.Opening) = (s.OpeningGain + without - with, s.Opening + 1);
                }
                expected[name] = s;
            }
        }
        Assert.Equal(["cs.AI", "cs.CL", "cs.CV", "cs.LG", "overall"], reports.Select(r => r.Name));
        foreach (var r in reports)
        {
            var x = expected[r.Name];
            Assert.Equal((x.Tokens, x.Examples), (r.Tokens, r.Examples));
            Assert.Equal(x.With / x.Tokens, r.LossWithTitle, 9);
            Assert.Equal(x.Without / x.Tokens, r.LossWithoutTitle, 9);
            Assert.Equal(x.OpeningGain / x.Opening, r.OpeningGain!.Value, 9);
            Assert.True(r.Gain > 0, $"{r.Name}: the title's words are copied, so it must help ({r.Gain})");
        }
    }

    [Fact]
    public void ReusingThePerCategoryPassGivesTheSameReportsAsScoringSeparately()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path, papers: 40, words: 50);
        using var split = TokenSplit.Open(data, "train");
        var model = new CopyingModel();
        foreach (int block in new[] { 48, 512 }) // cut examples, and whole ones ending in <|endoftext|>
        {
            var (perCategory, gains) = Evaluator.PerCategoryAndTitleGain(model, split, block, batchSize: 3, maxExamples: 30);
            var alone = Evaluator.PerCategory(model, split, block, batchSize: 5, maxExamples: 30);
            var gainsAlone = Evaluator.TitleGain(model, split, block, batchSize: 5, maxExamples: 30);
            Assert.Equal(alone.Select(r => (r.Name, r.Tokens, r.Examples)), perCategory.Select(r => (r.Name, r.Tokens, r.Examples)));
            for (int i = 0; i < alone.Count; i++)
                Assert.Equal(alone[i].Loss, perCategory[i].Loss, 9);
            Assert.Equal(gainsAlone.Select(r => (r.Name, r.Tokens, r.Examples)), gains.Select(r => (r.Name, r.Tokens, r.Examples)));
            for (int i = 0; i < gainsAlone.Count; i++)
            {
                Assert.Equal(gainsAlone[i].LossWithTitle, gains[i].LossWithTitle, 9);
                Assert.Equal(gainsAlone[i].Gain, gains[i].Gain, 9);
                Assert.Equal(gainsAlone[i].LaterGain, gains[i].LaterGain);
            }
        }
    }

    [Fact]
    public void AModelThatIgnoresTheTitleGainsNothing()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path, papers: 20);
        using var split = TokenSplit.Open(data, "train");
        // Copying only from the abstract itself: the title cannot change any abstract token's loss.
        var overall = Evaluator.TitleGain(new CopyingModel(fromAbstractOnly: true), split, 512, batchSize: 4)[^1];
        Assert.Equal(0, overall.Gain, 12);
        Assert.Equal(0, overall.OpeningGain!.Value, 12);
        Assert.True(overall.Tokens > 0);
    }

    /// <summary>
    /// A stand-in language model with a known use of context: predicting a token costs 1 nat if that token occurred
    /// earlier in the row (it can be copied) and 3 nats if not. With <paramref name="fromAbstractOnly"/> it copies only
    /// from after the row's &lt;|sep|&gt;, so it ignores the title.
    /// </summary>
    private sealed class CopyingModel(bool fromAbstractOnly = false) : ITrainableModel
    {
        public IReadOnlyList<(string Name, Parameter Parameter)> NamedParameters => [];
        public bool IsTraining { get; private set; }
        public void SetTraining(bool on) => IsTraining = on;
        public double ForwardBackward(Tensor blocks, double scale, bool[]? untrained = null) => throw new NotSupportedException();

        public float[][] TokenLosses(Tensor blocks, int[]? lengths = null)
        {
            Assert.False(IsTraining); // evaluation switches dropout off
            long B = blocks.shape[0], T = blocks.shape[1];
            var ids = blocks.data<long>().ToArray();
            var rows = new float[B][];
            for (int b = 0; b < B; b++)
            {
                int valid = lengths?[b] ?? (int)T;
                int[] tokens = [.. ids.Skip(b * (int)T).Take(valid).Select(t => (int)t)];
                rows[b] = [.. Enumerable.Range(1, valid - 1).Select(t => (float)Loss(tokens, t, fromAbstractOnly))];
            }
            return rows;
        }

        /// <summary>The loss of predicting tokens[t] from tokens[..t].</summary>
        public static double Loss(int[] tokens, int t, bool fromAbstractOnly = false)
        {
            int from = fromAbstractOnly ? Math.Max(0, Array.IndexOf(tokens, Gpt2Tokenizer.Separator) + 1) : 0;
            return Array.IndexOf(tokens, tokens[t], from, Math.Max(0, t - from)) >= 0 ? 1 : 3;
        }
    }
}
