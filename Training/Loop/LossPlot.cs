namespace OrleansGpt.Training.Loop;

/// <summary>Draws a run's curves as PNGs (ScottPlot, headless): loss against the optimizer step, and eval perplexity
/// against wall time.</summary>
public static class LossPlot
{
    public static void Write(IReadOnlyList<MetricPoint> points, string path)
    {
        var train = points.Where(p => p.TrainLoss is not null).ToList();
        var eval = points.Where(p => p.EvalLoss is not null).ToList();
        if (train.Count == 0 && eval.Count == 0)
            return;

        var plot = new ScottPlot.Plot();
        if (train.Count > 0)
        {
            var line = plot.Add.Scatter(train.Select(p => (double)p.Step).ToArray(), train.Select(p => p.TrainLoss!.Value).ToArray());
            line.LegendText = "train loss";
            line.MarkerSize = 0;
        }
        if (eval.Count > 0)
        {
            var line = plot.Add.Scatter(eval.Select(p => (double)p.Step).ToArray(), eval.Select(p => p.EvalLoss!.Value).ToArray());
            line.LegendText = "eval loss";
            line.MarkerSize = 6;
        }
        plot.Title("Loss");
        plot.XLabel("optimizer step");
        plot.YLabel("cross-entropy (nats/token)");
        plot.ShowLegend();
        Save(plot, path);
    }

    /// <summary>Draws eval perplexity against the run's wall time, each point labelled with the tokens seen by then:
    /// the curve to read a time budget from (how good a model N minutes of this machine make).</summary>
    public static void WritePerplexity(IReadOnlyList<MetricPoint> points, string path)
    {
        var eval = points.Where(p => p.Perplexity is not null).ToList();
        if (eval.Count == 0)
            return;
        var plot = new ScottPlot.Plot();
        double[] minutes = [.. eval.Select(p => p.ElapsedSeconds / 60)];
        double[] perplexity = [.. eval.Select(p => p.Perplexity!.Value)];
        var line = plot.Add.Scatter(minutes, perplexity);
        line.MarkerSize = 6;
        for (int i = 0; i < eval.Count; i++)
        {
            var label = plot.Add.Text(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{perplexity[i]:F1} @ {eval[i].Tokens / 1e6:F1}M tok"), minutes[i], perplexity[i]);
            label.LabelFontSize = 10;
        }
        plot.Title("Eval perplexity against wall time (labels: perplexity @ tokens seen)");
        plot.XLabel("minutes since the run started");
        plot.YLabel("eval perplexity");
        Save(plot, path);
    }

    private static void Save(ScottPlot.Plot plot, string path)
    {
        // Drawn beside the target and renamed over it, so a reader never sees half a PNG.
        string temp = $"{path}.tmp-{Guid.NewGuid():N}.png";
        try
        {
            plot.SavePng(temp, 900, 500);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
