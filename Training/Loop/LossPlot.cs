namespace OrleansGpt.Training.Loop;

/// <summary>Draws a run's curves as PNGs (ScottPlot, headless): loss against the optimizer step, and eval perplexity
/// and title gain against wall time.</summary>
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
    public static void WritePerplexity(IReadOnlyList<MetricPoint> points, string path) =>
        WriteAgainstTime(points, p => p.Perplexity, "F1", "Eval perplexity against wall time (labels: perplexity @ tokens seen)", "eval perplexity", path);

    /// <summary>Draws the title gain (nats per abstract token the title saves) against wall time, as
    /// <see cref="WritePerplexity"/>: whether the model is learning to use the title, not only the language.</summary>
    public static void WriteTitleGain(IReadOnlyList<MetricPoint> points, string path) =>
        WriteAgainstTime(points, p => p.TitleGain, "F3", "Title gain against wall time (labels: gain @ tokens seen)", "title gain (nats/token)", path);

    private static void WriteAgainstTime(IReadOnlyList<MetricPoint> points, Func<MetricPoint, double?> value, string format, string title, string yLabel, string path)
    {
        var eval = points.Where(p => value(p) is not null).ToList();
        if (eval.Count == 0)
            return;
        var plot = new ScottPlot.Plot();
        double[] minutes = [.. eval.Select(p => p.ElapsedSeconds / 60)];
        double[] values = [.. eval.Select(p => value(p)!.Value)];
        var line = plot.Add.Scatter(minutes, values);
        line.MarkerSize = 6;
        for (int i = 0; i < eval.Count; i++)
        {
            var label = plot.Add.Text(values[i].ToString(format, System.Globalization.CultureInfo.InvariantCulture) + string.Create(System.Globalization.CultureInfo.InvariantCulture, $" @ {eval[i].Tokens / 1e6:F1}M tok"), minutes[i], values[i]);
            label.LabelFontSize = 10;
        }
        plot.Title(title);
        plot.XLabel("minutes since the run started");
        plot.YLabel(yLabel);
        Save(plot, path);
    }

    /// <summary>One line per run of <paramref name="value"/> against wall time or tokens seen, for runs compared at equal
    /// cost (Muon beside AdamW, one schedule beside another): time where the runs shared a machine, tokens where they
    /// did not (a run on a faster CPU sees more tokens a minute, not more from each token).</summary>
    public static void WriteComparison(IReadOnlyList<(string Label, IReadOnlyList<MetricPoint> Points)> runs, Func<MetricPoint, double?> value, CurveAxis axis, string title, string yLabel, string path)
    {
        var plot = new ScottPlot.Plot();
        bool any = false;
        foreach (var (label, points) in runs)
        {
            var eval = points.Where(p => value(p) is not null).ToList();
            if (eval.Count == 0)
                continue;
            var line = plot.Add.Scatter(eval.Select(p => axis == CurveAxis.Tokens ? p.Tokens / 1e6 : p.ElapsedSeconds / 60).ToArray(), eval.Select(p => value(p)!.Value).ToArray());
            line.LegendText = label;
            line.MarkerSize = 6;
            any = true;
        }
        if (!any)
            return;
        plot.Title(title);
        plot.XLabel(axis == CurveAxis.Tokens ? "tokens seen (millions)" : "minutes since the run started");
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Alignment.UpperRight); // the curves end low on the right, where the default corner would hide them
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

/// <summary>What a comparison plot's x axis measures.</summary>
public enum CurveAxis
{
    /// <summary>Minutes since the run started.</summary>
    WallTime,

    /// <summary>Training tokens seen.</summary>
    Tokens,
}
