using OrleansGpt.Training.Data;
using OrleansGpt.Training.Loop;
using OrleansGpt.Training.Text;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Evaluation;

/// <summary>Mean next-token loss and its perplexity, exp(loss).</summary>
public sealed record LossReport(string Name, double Loss, long Tokens, long Examples)
{
    public double Perplexity => Math.Exp(Loss);
}

/// <summary>The title's worth to one category's abstracts (or "overall"), in nats per abstract token.</summary>
/// <param name="Tokens">Abstract tokens scored, each both with and without the title.</param>
/// <param name="LossWithTitle">Their mean loss after &lt;|CAT|&gt; Title &lt;|sep|&gt;.</param>
/// <param name="LossWithoutTitle">Their mean loss after &lt;|CAT|&gt; &lt;|sep|&gt;.</param>
/// <param name="OpeningGain">The gain over the first <see cref="Evaluator.OpeningTokens"/> abstract tokens; null if none.</param>
/// <param name="LaterGain">The gain over the tokens after them; null if none.</param>
public sealed record TitleGainReport(string Name, long Examples, long Tokens, double LossWithTitle, double LossWithoutTitle, double? OpeningGain, double? LaterGain)
{
    /// <summary>Mean loss without the title minus with it: how many nats per token the title saves.</summary>
    public double Gain => LossWithoutTitle - LossWithTitle;
}

/// <summary>Held-out loss, as training reports it (blocks) and as the paper's Table 9 does (per category).</summary>
public static class Evaluator
{
    /// <summary>Mean loss over the first <paramref name="maxBlocks"/> blocks of a split (0 = all), in a fixed order.</summary>
    public static LossReport Blocks(ITrainableModel model, BlockDataset data, int batchSize, int maxBlocks = 0)
    {
        int count = maxBlocks > 0 ? Math.Min(maxBlocks, data.BlockCount) : data.BlockCount;
        double lossSum = 0;
        long tokens = 0;
        bool wasTraining = model.IsTraining;
        model.SetTraining(false);
        try
        {
            var all = Enumerable.Range(0, count).ToArray();
            for (int start = 0; start < count; start += batchSize)
            {
                using var batch = data.Batch(all.AsSpan(start, Math.Min(batchSize, count - start)));
                foreach (var (sum, n) in model.Evaluate(batch))
                {
                    lossSum += sum;
                    tokens += n;
                }
            }
        }
        finally
        {
            model.SetTraining(wasTraining);
        }
        return new LossReport("blocks", lossSum / tokens, tokens, count);
    }

    /// <summary>
    /// Loss per category and overall, each example scored on its own (its first <paramref name="blockSize"/>
    /// tokens), so a category's perplexity is not mixed with its neighbours' context. Overall is the
    /// token-weighted mean.
    /// </summary>
    public static IReadOnlyList<LossReport> PerCategory(ITrainableModel model, TokenSplit split, int blockSize, int batchSize, int maxExamples = 0)
    {
        var examples = split.Examples.Take(maxExamples > 0 ? maxExamples : int.MaxValue).ToList();
        return PerCategory(examples, Score(model, [.. examples.Select(e => Tokens(split, e, blockSize))], batchSize));
    }

    /// <summary>
    /// <see cref="PerCategory(ITrainableModel, TokenSplit, int, int, int)"/> and <see cref="TitleGain"/> from one pass
    /// with the titles and one without: a causal model's loss at a position does not depend on the tokens after it, so
    /// the per-category pass over each example's first <paramref name="blockSize"/> tokens already holds every loss
    /// the title gain needs with the title in view. Two passes where the two reports alone take three.
    /// </summary>
    public static (IReadOnlyList<LossReport> PerCategory, IReadOnlyList<TitleGainReport> TitleGain) PerCategoryAndTitleGain(
        ITrainableModel model, TokenSplit split, int blockSize, int batchSize, int maxExamples = 0)
    {
        var examples = split.Examples.Take(maxExamples > 0 ? maxExamples : int.MaxValue).ToList();
        var losses = Score(model, [.. examples.Select(e => Tokens(split, e, blockSize))], batchSize);
        return (PerCategory(examples, losses), ScoreTitleGain(model, split, examples, blockSize, batchSize, losses));
    }

    private static IReadOnlyList<LossReport> PerCategory(IReadOnlyList<ExampleSpan> examples, float[][] losses)
    {
        var sums = new Dictionary<ArxivCategory, (double Loss, long Tokens, long Examples)>();
        for (int i = 0; i < examples.Count; i++)
        {
            var s = sums.GetValueOrDefault(examples[i].Category);
            sums[examples[i].Category] = (s.Loss + losses[i].Sum(l => (double)l), s.Tokens + losses[i].Length, s.Examples + 1);
        }
        var reports = sums.OrderBy(kv => kv.Key).Select(kv => new LossReport(PaperFormat.ArxivName(kv.Key), kv.Value.Loss / kv.Value.Tokens, kv.Value.Tokens, kv.Value.Examples)).ToList();
        reports.Add(new LossReport("overall", sums.Values.Sum(v => v.Loss) / sums.Values.Sum(v => v.Tokens), sums.Values.Sum(v => v.Tokens), sums.Values.Sum(v => v.Examples)));
        return reports;
    }

    /// <summary>Abstract tokens the title-gain report splits off as the opening (where the title should matter most).</summary>
    public const int OpeningTokens = 32;

    /// <summary>
    /// How much the model uses the title: every example's abstract tokens are scored twice, after
    /// <c>&lt;|CAT|&gt; Title &lt;|sep|&gt;</c> and after <c>&lt;|CAT|&gt; &lt;|sep|&gt;</c> (the title removed, the
    /// same abstract tokens), and the gain is the second mean loss minus the first, in nats per token: about 0 for a
    /// model that ignores the title. Scored are the abstract's tokens (not &lt;|endoftext|&gt;) that fit in
    /// <paramref name="blockSize"/> after the full prompt, the same ones in both, per category and overall, and split into
    /// the first <see cref="OpeningTokens"/> and the rest.
    /// </summary>
    public static IReadOnlyList<TitleGainReport> TitleGain(ITrainableModel model, TokenSplit split, int blockSize, int batchSize, int maxExamples = 0) =>
        ScoreTitleGain(model, split, [.. split.Examples.Take(maxExamples > 0 ? maxExamples : int.MaxValue)], blockSize, batchSize, withTitleLosses: null);

    /// <param name="withTitleLosses">Per example, the losses of its first <paramref name="blockSize"/> tokens scored
    /// whole, if a caller has them; null: the abstracts are scored after their titles here.</param>
    private static IReadOnlyList<TitleGainReport> ScoreTitleGain(ITrainableModel model, TokenSplit split, IReadOnlyList<ExampleSpan> examples, int blockSize, int batchSize,
        float[][]? withTitleLosses)
    {
        var tags = Enum.GetValues<ArxivCategory>().ToDictionary(c => c, c => Gpt2Tokenizer.Shared.Encode(PaperFormat.Tag(c)));
        var withTitle = new List<int[]>(examples.Count);
        var withoutTitle = new List<int[]>(examples.Count);
        var scored = new List<(int Example, ArxivCategory Category, int Prompt, int BarePrompt, int Count)>(examples.Count);
        for (int index = 0; index < examples.Count; index++)
        {
            var e = examples[index];
            int[] tokens = Tokens(split, e, int.MaxValue);
            int sep = Array.IndexOf(tokens, Gpt2Tokenizer.Separator);
            int end = Array.IndexOf(tokens, Gpt2Tokenizer.EndOfText);
            int[] tag = tags[e.Category];
            if (sep < 0 || !tokens.AsSpan(0, sep).StartsWith(tag))
                throw new InvalidDataException($"{split.Name} example at token {e.Offset} is not <|CAT|> Title <|sep|> Abstract: prepare the data again");
            int prompt = sep + 1, barePrompt = tag.Length + 1;
            int count = Math.Min((end < 0 ? tokens.Length : end) - prompt, blockSize - prompt);
            if (count <= 0)
                continue; // a title that fills the block leaves no abstract token to compare
            if (withTitleLosses is null)
                withTitle.Add(tokens[..(prompt + count)]);
            withoutTitle.Add([.. tag, Gpt2Tokenizer.Separator, .. tokens.AsSpan(prompt, count)]);
            scored.Add((index, e.Category, prompt, barePrompt, count));
        }
        var given = withTitleLosses is null ? Score(model, withTitle, batchSize) : [.. scored.Select(s => withTitleLosses[s.Example])];
        var bare = Score(model, withoutTitle, batchSize);
        var sums = new Dictionary<string, TitleGainSums>();
        for (int i = 0; i < scored.Count; i++)
        {
            var (_, category, prompt, barePrompt, count) = scored[i];
            foreach (string name in new[] { PaperFormat.ArxivName(category), "overall" })
            {
                var s = sums.TryGetValue(name, out var found) ? found : sums[name] = new TitleGainSums();
                s.Examples++;
                for (int j = 0; j < count; j++)
                {
                    // Abstract token j sits at prompt + j and is predicted at the position before it.
                    double with = given[i][prompt + j - 1], without = bare[i][barePrompt + j - 1];
                    s.Add(j < OpeningTokens, with, without);
                }
            }
        }
        return [.. sums.OrderBy(kv => kv.Key == "overall" ? 1 : 0).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value.Report(kv.Key))];
    }

    /// <summary>An example's first <paramref name="limit"/> tokens.</summary>
    private static int[] Tokens(TokenSplit split, ExampleSpan example, int limit)
    {
        var span = split.Slice(example.Offset, Math.Min(limit, example.Length));
        var tokens = new int[span.Length];
        for (int t = 0; t < tokens.Length; t++) tokens[t] = span[t];
        return tokens;
    }

    /// <summary>
    /// The next-token losses of each sequence scored on its own, in the order given. Sequences are batched by length
    /// with right padding, which causal attention keeps from affecting the real positions.
    /// </summary>
    private static float[][] Score(ITrainableModel model, IReadOnlyList<int[]> sequences, int batchSize)
    {
        var order = Enumerable.Range(0, sequences.Count).OrderBy(i => sequences[i].Length).ToArray();
        var losses = new float[sequences.Count][];
        bool wasTraining = model.IsTraining;
        model.SetTraining(false);
        try
        {
            for (int start = 0; start < order.Length; start += batchSize)
            {
                var group = order.AsSpan(start, Math.Min(batchSize, order.Length - start)).ToArray();
                int width = group.Max(i => sequences[i].Length);
                var ids = new long[group.Length * width];
                var lengths = new int[group.Length];
                for (int b = 0; b < group.Length; b++)
                {
                    var tokens = sequences[group[b]];
                    lengths[b] = tokens.Length;
                    for (int t = 0; t < tokens.Length; t++) ids[b * width + t] = tokens[t];
                }
                using var batch = tensor(ids, [group.Length, width]);
                var rows = model.TokenLosses(batch, lengths);
                for (int b = 0; b < group.Length; b++)
                    losses[group[b]] = rows[b];
            }
        }
        finally
        {
            model.SetTraining(wasTraining);
        }
        return losses;
    }

    private sealed class TitleGainSums
    {
        private double _with, _without, _openingWith, _openingWithout;
        private long _tokens, _opening;
        public long Examples;

        public void Add(bool opening, double with, double without)
        {
            (_with, _without, _tokens) = (_with + with, _without + without, _tokens + 1);
            if (opening)
                (_openingWith, _openingWithout, _opening) = (_openingWith + with, _openingWithout + without, _opening + 1);
        }

        public TitleGainReport Report(string name)
        {
            long rest = _tokens - _opening;
            return new TitleGainReport(name, Examples, _tokens, _with / _tokens, _without / _tokens,
                _opening == 0 ? null : (_openingWithout - _openingWith) / _opening,
                rest == 0 ? null : (_without - _openingWithout - (_with - _openingWith)) / rest);
        }
    }
}
