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
    /// token-weighted mean. Examples are batched by length with right padding, which causal attention
    /// keeps from affecting the real positions.
    /// </summary>
    public static IReadOnlyList<LossReport> PerCategory(ITrainableModel model, TokenSplit split, int blockSize, int batchSize, int maxExamples = 0)
    {
        var examples = split.Examples.Take(maxExamples > 0 ? maxExamples : int.MaxValue).OrderBy(e => e.Length).ToList();
        var sums = new Dictionary<ArxivCategory, (double Loss, long Tokens, long Examples)>();
        bool wasTraining = model.IsTraining;
        model.SetTraining(false);
        try
        {
            for (int start = 0; start < examples.Count; start += batchSize)
            {
                var group = examples.GetRange(start, Math.Min(batchSize, examples.Count - start));
                int width = Math.Min(blockSize, group.Max(e => e.Length));
                var ids = new long[group.Count * width];
                var lengths = new int[group.Count];
                for (int b = 0; b < group.Count; b++)
                {
                    lengths[b] = Math.Min(width, group[b].Length);
                    var tokens = split.Slice(group[b].Offset, lengths[b]);
                    for (int t = 0; t < lengths[b]; t++) ids[b * width + t] = tokens[t];
                }
                using var batch = tensor(ids, [group.Count, width]);
                var rows = model.Evaluate(batch, lengths);
                for (int b = 0; b < group.Count; b++)
                {
                    var (loss, n) = rows[b];
                    var c = group[b].Category;
                    var s = sums.GetValueOrDefault(c);
                    sums[c] = (s.Loss + loss, s.Tokens + n, s.Examples + 1);
                }
            }
        }
        finally
        {
            model.SetTraining(wasTraining);
        }
        var reports = sums.OrderBy(kv => kv.Key).Select(kv => new LossReport(PaperFormat.ArxivName(kv.Key), kv.Value.Loss / kv.Value.Tokens, kv.Value.Tokens, kv.Value.Examples)).ToList();
        reports.Add(new LossReport("overall", sums.Values.Sum(v => v.Loss) / sums.Values.Sum(v => v.Tokens), sums.Values.Sum(v => v.Tokens), sums.Values.Sum(v => v.Examples)));
        return reports;
    }
}
