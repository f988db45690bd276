using System.CommandLine;
using System.Globalization;
using System.Text;
using OrleansGpt.Training.Loop;

namespace OrleansGpt.Training.Cli;

/// <summary>sweep: one training run per value of one setting, as the paper's Tables 4 to 8.</summary>
internal static class SweepCommand
{
    private static readonly string[] s_settings = ["grad-accum", "block-size", "weight-decay", "epochs", "batch-size", "lr", "shape", "warmup-steps", "dtype", "beta2", "optimizer", "muon-lr", "muon-momentum", "wsd-decay", "title-in-every-block", "abstract-only-loss"];

    public static void AddTo(RootCommand root)
    {
        var run = new TrainCommands.RunOptions();
        var vary = new Option<string>("--vary") { Description = $"The setting and its values, e.g. grad-accum=1,2,4,8,16 (one of {string.Join(", ", s_settings)})", Required = true };
        var output = new Option<string>("--out") { Description = "Directory for the runs (one sub-directory per value) and sweep.md", Required = true };
        var command = new Command("sweep", "Train one run per value of a setting on a small model and data subset; print train loss, eval loss and perplexity as a markdown table");
        foreach (var option in run.All) command.Options.Add(option);
        command.Options.Add(vary);
        command.Options.Add(output);
        command.SetHandler(r =>
        {
            var (setting, values) = ParseVary(r.GetValue(vary)!);
            string outDir = r.GetValue(output)!;
            var inv = CultureInfo.InvariantCulture;
            var rows = new List<string>();
            // Every value is checked before the first run starts: a bad last value must not surface hours later.
            var runs = values.Select(value => (Value: value, Options: Apply(run.Read(r, Path.Combine(outDir, $"{setting}-{value}"), resume: false), setting, value))).ToList();
            foreach (var (value, options) in runs)
            {
                Console.Error.WriteLine($"== {setting} = {value}");
                var result = new Trainer(options, Console.Error).Run();
                rows.Add(string.Create(inv, $"| {value} | {result.MeanTrainLoss:F4} | {result.EvalLoss:F4} | {result.Perplexity:F2} | {result.Steps:N0} | {result.TokensSeen:N0} | {result.Seconds:F0} |"));
            }
            var table = new StringBuilder();
            table.AppendLine(inv, $"| {setting} | train loss | eval loss | PPL | steps | tokens | seconds |");
            table.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            rows.ForEach(row => table.AppendLine(row));
            IO.AtomicWrite.Text(Path.Combine(outDir, "sweep.md"), table.ToString());
            Console.WriteLine(table);
            return 0;
        });
        root.Subcommands.Add(command);
    }

    private static (string Setting, string[] Values) ParseVary(string text)
    {
        int eq = text.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0)
            throw new ArgumentException($"--vary '{text}' is not of the form setting=v1,v2,...");
        string setting = text[..eq].Trim();
        if (!s_settings.Contains(setting))
            throw new ArgumentException($"--vary: unknown setting '{setting}'; expected one of {string.Join(", ", s_settings)}");
        string[] values = text[(eq + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (values.Length == 0)
            throw new ArgumentException($"--vary '{text}' lists no values");
        return (setting, values);
    }

    private static TrainOptions Apply(TrainOptions o, string setting, string value)
    {
        var inv = CultureInfo.InvariantCulture;
        int Int() => int.TryParse(value, NumberStyles.Integer, inv, out int v) ? v : throw new ArgumentException($"--vary {setting}: '{value}' is not a whole number");
        double Real() => double.TryParse(value, NumberStyles.Float, inv, out double v) ? v : throw new ArgumentException($"--vary {setting}: '{value}' is not a number");
        bool Flag() => bool.TryParse(value, out bool v) ? v : throw new ArgumentException($"--vary {setting}: '{value}' is not true or false");
        return (setting switch
        {
            "grad-accum" => o with { GradientAccumulation = Int() },
            "block-size" => o with { BlockSize = Int() },
            "weight-decay" => o with { WeightDecay = Real() },
            "epochs" => o with { Epochs = Int() },
            "batch-size" => o with { BatchSize = Int() },
            "lr" => o with { LearningRate = Real() },
            "warmup-steps" => o with { WarmupSteps = Int() },
            "dtype" => o with { Precision = CommandLine.ResolvePrecision(value) },
            "beta2" => o with { Beta2 = Real() },
            "optimizer" => Enum.TryParse<OptimizerKind>(value, ignoreCase: true, out var kind) && !int.TryParse(value, out _)
                ? o with { Optimizer = kind }
                : throw new ArgumentException($"--vary optimizer: '{value}' is not adamw or muon"),
            "muon-lr" or "muon-momentum" when o.Optimizer != OptimizerKind.Muon => throw new ArgumentException($"--vary {setting} applies only with --optimizer muon"),
            "muon-lr" => o with { MuonLearningRate = Real() },
            "muon-momentum" => o with { MuonMomentum = Real() },
            "wsd-decay" => o with { WsdDecayShare = Real() },
            "title-in-every-block" => o with { TitleInEveryBlock = Flag() },
            "abstract-only-loss" => o with { AbstractOnlyLoss = Flag() },
            // LAYERSxWIDTH: "layers vs width at fixed time" with --time-limit; the heads are ScratchConfig's (--heads,
            // else 64 wide as GPT-2's).
            "shape" => value.Split('x') is [var l, var w] && int.TryParse(l, NumberStyles.Integer, inv, out int layers) && int.TryParse(w, NumberStyles.Integer, inv, out int width)
                ? o with { Layers = layers, Width = width }
                : throw new ArgumentException($"--vary shape: '{value}' is not LAYERSxWIDTH, e.g. 8x256"),
            _ => throw new ArgumentException($"--vary: unknown setting '{setting}'"),
        }).Validate();
    }
}
