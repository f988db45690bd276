using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Evaluation;
using OrleansGpt.Training.Loop;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Training.Cli;

/// <summary>train and eval.</summary>
internal static class TrainCommands
{
    public static void AddTo(RootCommand root)
    {
        root.Subcommands.Add(TrainCommand());
        root.Subcommands.Add(EvalCommand());
        root.Subcommands.Add(CurvesCommand());
    }

    /// <summary>The options of one training run, shared by train and sweep.</summary>
    internal sealed class RunOptions
    {
        public Option<string> Data { get; } = new("--data") { Description = "A directory written by prepare", Required = true };
        public Option<string> Model { get; } = new("--model") { Description = $"Model size when training from scratch: {string.Join(", ", GptConfig.PresetNames)}", DefaultValueFactory = _ => "tiny" };
        public Option<string> Init { get; } = new("--init") { Description = "scratch, or a checkpoint directory to fine-tune (ours or a Hugging Face GPT-2 download)", DefaultValueFactory = _ => "scratch" };
        public Option<int> BlockSize { get; } = new("--block-size") { Description = "Tokens per training block", DefaultValueFactory = _ => 512 };
        public Option<int> BatchSize { get; } = new("--batch-size") { Description = "Blocks per micro-batch", DefaultValueFactory = _ => 8 };
        public Option<int> GradAccum { get; } = new("--grad-accum") { Description = "Micro-batches per optimizer step", DefaultValueFactory = _ => 1 };
        public Option<double> LearningRate { get; } = new("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => 5e-5 };
        public Option<int> Epochs { get; } = new("--epochs") { Description = "Passes over the training blocks", DefaultValueFactory = _ => 3 };
        public Option<double> WeightDecay { get; } = new("--weight-decay") { Description = "AdamW weight decay (not on biases and LayerNorms)", DefaultValueFactory = _ => 0.0 };
        public Option<double> Beta2 { get; } = new("--beta2") { Description = "AdamW's second-moment decay (torch: 0.999; 0.95 keeps high learning rates stable)", DefaultValueFactory = _ => 0.999 };
        public Option<long> WarmupSteps { get; } = new("--warmup-steps") { Description = "Linear warm-up steps", DefaultValueFactory = _ => 0 };
        public Option<string> Schedule { get; } = new("--lr-schedule") { Description = "constant, linear, cosine or wsd (after warm-up; wsd holds the peak, then falls linearly over the last 20%)", DefaultValueFactory = _ => "linear" };
        public Option<double> WsdDecay { get; } = new("--wsd-decay") { Description = "The share of the run a wsd schedule spends decaying", DefaultValueFactory = _ => LearningRateSchedule.DefaultWsdDecayShare };
        public Option<string> Optimizer { get; } = new("--optimizer") { Description = "adamw, or muon: orthogonalised momentum for the blocks' matrices, AdamW (--lr) for embeddings, biases and LayerNorms", DefaultValueFactory = _ => "adamw" };
        public Option<double> MuonLearningRate { get; } = new("--muon-lr") { Description = "Muon's peak rate (it follows --lr-schedule as --lr does)", DefaultValueFactory = _ => Muon.DefaultLearningRate };
        public Option<double> MuonMomentum { get; } = new("--muon-momentum") { Description = "Muon's Nesterov momentum", DefaultValueFactory = _ => Muon.DefaultMomentum };
        public Option<long?> MaxSteps { get; } = new("--max-steps") { Description = "Stop after this many optimizer steps" };
        public Option<int> EvalEvery { get; } = new("--eval-every") { Description = "Evaluate and checkpoint every N steps (0: only at the end)", DefaultValueFactory = _ => 0 };
        public Option<int> EvalBlocks { get; } = new("--eval-blocks") { Description = "Eval blocks per evaluation (0: the whole eval split)", DefaultValueFactory = _ => 64 };
        public Option<int> TitleGainPapers { get; } = new("--title-gain-papers") { Description = "Each evaluation also measures the title gain on the first N eval papers (0: off)", DefaultValueFactory = _ => 100 };
        public Option<bool> TitleInEveryBlock { get; } = new("--title-in-every-block") { Description = "A training block cut inside a paper starts with that paper's <|CAT|> Title <|sep|> and, where the cut is inside the abstract, a second <|sep|> (none trained on), so no abstract token is learned without its title and a single <|sep|> is only followed by an abstract's start" };
        public Option<long?> MaxTrainBlocks { get; } = new("--max-train-blocks") { Description = "Train on the first N blocks only (a subset)" };
        public Option<long> Seed { get; } = new("--seed") { Description = "Seed of initialisation, data order and dropout", DefaultValueFactory = _ => 42 };
        public Option<string> Dtype { get; } = CommandLine.DtypeOption();
        public Option<double?> Dropout { get; } = new("--dropout") { Description = "Override the model's dropout (GPT-2: 0.1)" };
        public Option<int> LogEvery { get; } = new("--log-every") { Description = "Print and log every N steps", DefaultValueFactory = _ => 10 };
        public Option<int?> Layers { get; } = new("--layers") { Description = "Override the preset's layer count (from scratch only)" };
        public Option<int?> Heads { get; } = new("--heads") { Description = "Override the preset's attention heads (from scratch only; default width / 64 when --width is given)" };
        public Option<int?> Width { get; } = new("--width") { Description = "Override the preset's width, n_embd (from scratch only)" };
        public Option<double?> TimeLimit { get; } = new("--time-limit") { Description = "Stop after this many minutes and decay the learning rate over them (compare runs at equal cost)" };

        public RunOptions()
        {
            Schedule.AcceptOnlyFromAmong("constant", "linear", "cosine", "wsd");
            Optimizer.AcceptOnlyFromAmong("adamw", "muon");
        }

        public Option<bool> AbstractOnlyLoss { get; } = new("--abstract-only-loss") { Description = "Leave the prompts (<|CAT|> Title <|sep|>) out of the training loss, so only abstracts (and their <|endoftext|>) are learned; eval still scores every token" };
        public IEnumerable<Option> All => [Data, Model, Init, BlockSize, BatchSize, GradAccum, LearningRate, Epochs, WeightDecay, Beta2, WarmupSteps, Schedule, WsdDecay, Optimizer, MuonLearningRate, MuonMomentum, MaxSteps, EvalEvery, EvalBlocks, TitleGainPapers, TitleInEveryBlock, AbstractOnlyLoss, MaxTrainBlocks, Seed, Dtype, Dropout, LogEvery, Layers, Heads, Width, TimeLimit];

        public TrainOptions Read(ParseResult r, string output, bool resume)
        {
            var options = ReadOptions(r, output, resume);
            // A Muon setting beside AdamW would change nothing: say so rather than run what the user did not ask for.
            foreach (var muonOnly in new Option[] { MuonLearningRate, MuonMomentum })
                if (options.Optimizer != OptimizerKind.Muon && r.GetResult(muonOnly) is { Implicit: false })
                    throw new ArgumentException($"{muonOnly.Name} applies only with --optimizer muon (this run uses {options.Optimizer.ToString().ToLowerInvariant()})");
            return options;
        }

        private TrainOptions ReadOptions(ParseResult r, string output, bool resume) => new()
        {
            DataDirectory = r.GetValue(Data)!,
            OutputDirectory = output,
            ModelSize = r.GetValue(Model)!,
            Init = r.GetValue(Init)!,
            BlockSize = r.GetValue(BlockSize),
            BatchSize = r.GetValue(BatchSize),
            GradientAccumulation = r.GetValue(GradAccum),
            LearningRate = r.GetValue(LearningRate),
            Epochs = r.GetValue(Epochs),
            WeightDecay = r.GetValue(WeightDecay),
            Beta2 = r.GetValue(Beta2),
            WarmupSteps = r.GetValue(WarmupSteps),
            Schedule = Enum.Parse<LearningRateShape>(r.GetValue(Schedule)!, ignoreCase: true),
            WsdDecayShare = r.GetValue(WsdDecay),
            Optimizer = Enum.Parse<OptimizerKind>(r.GetValue(Optimizer)!, ignoreCase: true),
            MuonLearningRate = r.GetValue(MuonLearningRate),
            MuonMomentum = r.GetValue(MuonMomentum),
            MaxSteps = r.GetValue(MaxSteps),
            EvalEvery = r.GetValue(EvalEvery),
            EvalBlocks = r.GetValue(EvalBlocks),
            TitleGainPapers = r.GetValue(TitleGainPapers),
            TitleInEveryBlock = r.GetValue(TitleInEveryBlock),
            AbstractOnlyLoss = r.GetValue(AbstractOnlyLoss),
            MaxTrainBlocks = r.GetValue(MaxTrainBlocks),
            Seed = r.GetValue(Seed),
            Precision = CommandLine.ResolvePrecision(r.GetValue(Dtype)!),
            Dropout = r.GetValue(Dropout),
            LogEvery = r.GetValue(LogEvery),
            Layers = r.GetValue(Layers),
            Heads = r.GetValue(Heads),
            Width = r.GetValue(Width),
            TimeLimitMinutes = r.GetValue(TimeLimit),
            Resume = resume,
        };
    }

    private static Command TrainCommand()
    {
        var run = new RunOptions();
        var output = new Option<string>("--out") { Description = "Run directory: checkpoint/, metrics.jsonl, loss.png", Required = true };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --out from its last checkpoint (same settings)" };
        var command = new Command("train", "Fine-tune or train GPT-2 on prepared data (run_clm blocks, AdamW, checkpoints you can resume; Ctrl-C saves and exits)");
        foreach (var option in run.All) command.Options.Add(option);
        command.Options.Add(output);
        command.Options.Add(resume);
        command.SetHandler(r =>
        {
            var options = run.Read(r, r.GetValue(output)!, r.GetValue(resume));
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCtrlC = (_, e) =>
            {
                if (cancel.IsCancellationRequested) return; // a second Ctrl-C kills the process as usual
                e.Cancel = true;
                Console.Error.WriteLine("Ctrl-C: finishing this step, then saving a checkpoint (Ctrl-C again to abort without saving)");
                cancel.Cancel();
            };
            Console.CancelKeyPress += onCtrlC;
            try
            {
                var result = new Trainer(options, Console.Out).Run(cancel.Token);
                if (result.Perplexity is { } ppl)
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"eval loss {result.EvalLoss:F4}, perplexity {ppl:F2}"));
                return result.Interrupted ? 130 : 0;
            }
            finally
            {
                Console.CancelKeyPress -= onCtrlC;
            }
        });
        return command;
    }

    private static Command EvalCommand()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory (or a training run directory)", Required = true };
        var data = new Option<string>("--data") { Description = "A directory written by prepare", Required = true };
        var split = new Option<string>("--split") { Description = "Which split to score", DefaultValueFactory = _ => "eval" };
        split.AcceptOnlyFromAmong("eval", "train");
        var blockSize = new Option<int>("--block-size") { Description = "Score each example's first N tokens", DefaultValueFactory = _ => 512 };
        var batchSize = new Option<int>("--batch-size") { Description = "Examples per forward pass", DefaultValueFactory = _ => 8 };
        var maxExamples = new Option<int>("--max-examples") { Description = "Score only the first N examples (0: all)", DefaultValueFactory = _ => 0 };
        var json = new Option<string?>("--json") { Description = "Also write the results as JSON to this file" };
        var titleGain = new Option<bool>("--title-gain") { Description = "Also score each abstract without its title: how many nats per token the title saves (one more pass over the examples)", DefaultValueFactory = _ => true };
        var command = new Command("eval", "Eval loss and perplexity, overall and per category (the paper's Table 9), and the title gain, as markdown and JSON")
        {
            checkpoint, data, split, blockSize, batchSize, maxExamples, json, titleGain,
        };
        command.SetHandler(r =>
        {
            string dir = r.GetValue(checkpoint)!;
            using var model = Gpt2Checkpoint.Load(dir, minVocabSize: Gpt2Tokenizer.VocabSize);
            using var tokens = TokenSplit.Open(r.GetValue(data)!, r.GetValue(split)!);
            int block = Math.Min(r.GetValue(blockSize), model.Config.BlockSize);
            var provenance = Gpt2Checkpoint.ReadProvenance(dir);
            var lm = new CausalLanguageModel(model);
            IReadOnlyList<LossReport> reports;
            IReadOnlyList<TitleGainReport> gains = [];
            if (r.GetValue(titleGain))
                (reports, gains) = Evaluator.PerCategoryAndTitleGain(lm, tokens, block, r.GetValue(batchSize), r.GetValue(maxExamples));
            else
                reports = Evaluator.PerCategory(lm, tokens, block, r.GetValue(batchSize), r.GetValue(maxExamples));
            var inv = CultureInfo.InvariantCulture;

            Console.WriteLine($"{Gpt2Checkpoint.Resolve(dir)} ({provenance.Kind}: {provenance.Description}) on the {r.GetValue(split)} split, each example's first {block} tokens");
            Console.WriteLine();
            Console.WriteLine("| category | examples | tokens | eval loss | perplexity |");
            Console.WriteLine("| --- | ---: | ---: | ---: | ---: |");
            foreach (var report in reports)
                Console.WriteLine(string.Create(inv, $"| {report.Name} | {report.Examples:N0} | {report.Tokens:N0} | {report.Loss:F4} | {report.Perplexity:F2} |"));
            if (gains.Count > 0)
            {
                Console.WriteLine();
                Console.WriteLine($"Title gain: the abstract tokens' mean loss after <|CAT|> <|sep|> minus after <|CAT|> Title <|sep|>, nats per token (0: the title is not used)");
                Console.WriteLine();
                Console.WriteLine($"| category | examples | abstract tokens | loss with title | without | title gain | first {Evaluator.OpeningTokens} tokens | the rest |");
                Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
                foreach (var g in gains)
                    Console.WriteLine(string.Create(inv, $"| {g.Name} | {g.Examples:N0} | {g.Tokens:N0} | {g.LossWithTitle:F4} | {g.LossWithoutTitle:F4} | {g.Gain:F4} | {(g.OpeningGain is { } o ? o.ToString("F4", inv) : "-")} | {(g.LaterGain is { } l ? l.ToString("F4", inv) : "-")} |"));
            }
            var results = new
            {
                perplexity = reports.Select(x => new { category = x.Name, examples = x.Examples, tokens = x.Tokens, loss = x.Loss, perplexity = x.Perplexity }),
                title_gain = gains.Select(g => new
                {
                    category = g.Name, examples = g.Examples, tokens = g.Tokens, loss_with_title = g.LossWithTitle, loss_without_title = g.LossWithoutTitle,
                    gain = g.Gain, opening_gain = g.OpeningGain, later_gain = g.LaterGain, opening_tokens = Evaluator.OpeningTokens,
                }),
            };
            string text = JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true });
            Console.WriteLine();
            Console.WriteLine(text);
            if (r.GetValue(json) is { } path)
                IO.AtomicWrite.Text(path, text);
            return 0;
        });
        return command;
    }

    private static Command CurvesCommand()
    {
        var runs = new Option<string[]>("--run") { Description = "A training run directory, or a run's metrics.jsonl kept elsewhere (repeat for each run to compare)", Required = true, AllowMultipleArgumentsPerToken = true };
        var labels = new Option<string[]>("--label") { Description = "A name for each --run, in the same order (default: the directory's name)", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Directory for perplexity.png and title-gain.png (against wall time), perplexity-tokens.png and title-gain-tokens.png (against tokens seen), and curves.md", Required = true };
        var command = new Command("curves", "Draw several runs' eval perplexity and title gain against wall time and against tokens seen, one plot each, and list their evaluations as markdown")
        {
            runs, labels, output,
        };
        command.SetHandler(r =>
        {
            string[] runPaths = r.GetValue(runs) ?? [];
            string[] names = r.GetValue(labels) ?? [];
            if (names.Length != 0 && names.Length != runPaths.Length)
                throw new ArgumentException($"--label was given {names.Length} times for {runPaths.Length} runs: give one per --run, or none");
            var curves = new List<(string Label, IReadOnlyList<MetricPoint> Points)>();
            for (int i = 0; i < runPaths.Length; i++)
            {
                // A metrics file names its run by its file name (docs/training/2h-metrics.jsonl: "2h-metrics").
                bool isFile = File.Exists(runPaths[i]);
                var points = isFile ? Trainer.ReadMetricsFile(runPaths[i]) : Trainer.ReadMetrics(runPaths[i]);
                if (!points.Any(p => p.EvalLoss is not null))
                    throw new ArgumentException($"--run {runPaths[i]}: no evaluations in {(isFile ? "it" : $"its {Trainer.MetricsFile}")}; is it a training run directory or a run's {Trainer.MetricsFile}?");
                curves.Add((names.Length > 0 ? names[i]
                    : isFile ? Path.GetFileNameWithoutExtension(runPaths[i])
                    : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(runPaths[i]))), points));
            }
            string outDir = r.GetValue(output)!;
            Directory.CreateDirectory(outDir);
            LossPlot.WriteComparison(curves, p => p.Perplexity, CurveAxis.WallTime, "Eval perplexity against wall time", "eval perplexity", Path.Combine(outDir, Trainer.PerplexityPlotFile));
            LossPlot.WriteComparison(curves, p => p.TitleGain, CurveAxis.WallTime, "Title gain against wall time", "title gain (nats/token)", Path.Combine(outDir, Trainer.TitleGainPlotFile));
            LossPlot.WriteComparison(curves, p => p.Perplexity, CurveAxis.Tokens, "Eval perplexity against tokens seen", "eval perplexity", Path.Combine(outDir, "perplexity-tokens.png"));
            LossPlot.WriteComparison(curves, p => p.TitleGain, CurveAxis.Tokens, "Title gain against tokens seen", "title gain (nats/token)", Path.Combine(outDir, "title-gain-tokens.png"));
            var inv = CultureInfo.InvariantCulture;
            var table = new System.Text.StringBuilder();
            table.AppendLine("| run | step | minutes | tokens | eval loss | perplexity | title gain |");
            table.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
            foreach (var (label, points) in curves)
                foreach (var p in points.Where(p => p.EvalLoss is not null))
                    table.AppendLine(string.Create(inv, $"| {label} | {p.Step:N0} | {p.ElapsedSeconds / 60:F1} | {p.Tokens:N0} | {p.EvalLoss:F4} | {p.Perplexity:F2} | {(p.TitleGain is { } g ? g.ToString("F4", inv) : "-")} |"));
            IO.AtomicWrite.Text(Path.Combine(outDir, "curves.md"), table.ToString());
            Console.Write(table);
            return 0;
        });
        return command;
    }
}
