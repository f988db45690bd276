namespace OrleansGpt.Training.Loop;

/// <summary>Draws a run's training and eval loss against the optimizer step as a PNG (ScottPlot, headless).</summary>
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
