using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Evaluation;
using OrleansGpt.Training.IO;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using OrleansGpt.Training.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Loop;

/// <summary>Where a run stands; saved in trainer_state.json so a run can resume exactly.</summary>
/// <param name="Optimizer">The run's --optimizer; null in states written before Muon existed, which were all AdamW.</param>
public sealed record TrainerState(long Step, long TokensSeen, double ElapsedSeconds, string TrajectoryKey, string RngState, double? LastEvalLoss, OptimizerKind? Optimizer = null);

/// <summary>One logged point (a line of metrics.jsonl).</summary>
/// <param name="TitleGain">At an evaluation, nats per abstract token the title saves (<see cref="Evaluator.TitleGain"/>)
/// over the first <see cref="TrainOptions.TitleGainPapers"/> eval papers.</param>
public sealed record MetricPoint(long Step, double Epoch, long Tokens, double? TrainLoss, double? LearningRate, double? TokensPerSecond, double? EvalLoss, double? Perplexity, double ElapsedSeconds, double? TitleGain = null);

/// <summary>How a run ended.</summary>
/// <param name="MeanTrainLoss">Mean training loss over this session's steps (Hugging Face's train_loss).</param>
public sealed record TrainResult(long Steps, long TokensSeen, double? FinalTrainLoss, double? MeanTrainLoss, double? EvalLoss, bool Interrupted, string CheckpointDirectory, double Seconds)
{
    public double? Perplexity => EvalLoss is { } l ? Math.Exp(l) : null;
}

/// <summary>
/// Fine-tunes (or trains from scratch) a GPT-2 checkpoint on prepared data: run_clm's blocks, AdamW, warm-up
/// and decay, gradient accumulation and clipping, periodic evaluation, atomic checkpoints with optimizer and
/// random state, and exact resumption.
/// </summary>
public sealed class Trainer(TrainOptions options, TextWriter log)
{
    public const string CheckpointFolder = "checkpoint";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string StateFile = "trainer_state.json";
    public const string MetricsFile = "metrics.jsonl";
    public const string PlotFile = "loss.png";
    public const string PerplexityPlotFile = "perplexity.png";
    public const string TitleGainPlotFile = "title-gain.png";
    private static readonly JsonSerializerOptions s_json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = false };

    /// <summary>Called after every optimizer step with the step number (tests use it to interrupt a run).</summary>
    public Action<long>? AfterStep { get; init; }

    /// <summary>Called with each point written to metrics.jsonl (train loss every LogEvery steps, each evaluation) and
    /// the run's total steps: how a caller such as the training grain follows the run.</summary>
    public Action<MetricPoint, long>? Progress { get; init; }

    /// <summary>Runs until the last step, or until <paramref name="cancellation"/> fires (then saves and returns).</summary>
    public TrainResult Run(CancellationToken cancellation = default)
    {
        var o = options.Validate();
        string run = o.OutputDirectory;
        string checkpoint = Path.Combine(run, CheckpointFolder);
        if (!o.Resume && Directory.Exists(checkpoint))
            throw new IOException($"{run} already holds a checkpoint; pass --resume to continue that run, or choose another --out");
        if (o.Resume && !File.Exists(Path.Combine(checkpoint, StateFile)))
            throw new FileNotFoundException($"Nothing to resume: {checkpoint} has no {StateFile}", Path.Combine(checkpoint, StateFile));

        using var trainSplit = TokenSplit.Open(o.DataDirectory, "train");
        using var evalSplit = TokenSplit.Open(o.DataDirectory, "eval");
        var trainData = new BlockDataset(trainSplit, o.BlockSize, o.MaxTrainBlocks ?? long.MaxValue, o.TitleInEveryBlock, o.AbstractOnlyLoss);
        var evalData = new BlockDataset(evalSplit, o.BlockSize);

        NativeAllocator.KeepLargeBlocks();
        manual_seed(o.Seed);
        using var model = CreateModel(o, checkpoint);
        if (o.BlockSize > model.Config.BlockSize)
            throw new ArgumentOutOfRangeException(nameof(options), $"--block-size {o.BlockSize} is longer than the model's {model.Config.BlockSize} positions");
        // bf16: the model computes in bf16 and the optimizer keeps the fp32 values (loaded or initialised) as masters.
        Dictionary<string, Tensor>? masters = null;
        if (o.Precision != Precision.Fp32)
        {
            masters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone().DetachFromDisposeScope());
            model.to(o.Precision.ToScalarType());
        }
        var lm = new CausalLanguageModel(model);
        using IOptimizer optimizer = o.Optimizer == OptimizerKind.Muon
            ? new Muon(lm.NamedParameters, o.MuonLearningRate, o.MuonMomentum, o.LearningRate, o.WeightDecay, masters, o.Beta2)
            : new AdamW(lm.NamedParameters, o.WeightDecay, masters, beta2: o.Beta2);
        if (masters is not null)
            foreach (var t in masters.Values) t.Dispose();

        int microPerEpoch = trainData.BlockCount / o.BatchSize;
        long stepsPerEpoch = microPerEpoch / o.GradientAccumulation;
        if (stepsPerEpoch == 0)
            throw new ArgumentException($"The training split has {trainData.BlockCount} blocks of {o.BlockSize}: too few for one step of {o.BatchSize} x {o.GradientAccumulation}");
        long totalSteps = Math.Min(o.MaxSteps ?? long.MaxValue, o.Epochs * stepsPerEpoch);
        var schedule = new LearningRateSchedule(o.LearningRate, o.Schedule, o.WarmupSteps, totalSteps, o.WsdDecayShare);

        long step = 0, tokensSeen = 0;
        double elapsedBefore = 0;
        double? lastEval = null;
        if (o.Resume)
        {
            var state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(Path.Combine(checkpoint, StateFile)), s_json)!;
            var savedOptimizer = state.Optimizer ?? OptimizerKind.AdamW;
            if (savedOptimizer != o.Optimizer)
                throw new ArgumentException($"--resume: this run was trained with --optimizer {savedOptimizer.ToString().ToLowerInvariant()}, not {o.Optimizer.ToString().ToLowerInvariant()}; its saved state is that optimizer's. Resume with --optimizer {savedOptimizer.ToString().ToLowerInvariant()}, or start a new run in another --out");
            if (state.TrajectoryKey != o.TrajectoryKey())
                throw new ArgumentException($"--resume needs the settings of the run it continues.\n  saved:  {state.TrajectoryKey}\n  given:  {o.TrajectoryKey()}");
            optimizer.Load(Path.Combine(checkpoint, OptimizerFile), state.Step);
            using var rng = tensor(Convert.FromBase64String(state.RngState), ScalarType.Byte);
            set_rng_state(rng);
            (step, tokensSeen, elapsedBefore, lastEval) = (state.Step, state.TokensSeen, state.ElapsedSeconds, state.LastEvalLoss);
            TrimMetrics(Path.Combine(run, MetricsFile), step);
        }

        PrintSettings(o, model, optimizer, trainData, evalData, stepsPerEpoch, totalSteps, step);
        Directory.CreateDirectory(run);
        using var metrics = new StreamWriter(Path.Combine(run, MetricsFile), append: true) { AutoFlush = true };
        var clock = Stopwatch.StartNew();
        long tokensThisSession = 0, stepsThisSession = 0;
        double? lastLoss = null;
        double lossTotal = 0;
        int[]? order = null;
        long orderEpoch = -1;
        bool interrupted = false;
        lm.SetTraining(true);

        double? timeLimit = o.TimeLimitMinutes * 60;
        double TimeSpent() => elapsedBefore + clock.Elapsed.TotalSeconds;
        while (step < totalSteps)
        {
            if (cancellation.IsCancellationRequested)
            {
                interrupted = true;
                break;
            }
            if (TimeSpent() >= timeLimit)
            {
                log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"time limit of {o.TimeLimitMinutes} minutes reached after step {step}"));
                break;
            }
            long epoch = step / stepsPerEpoch;
            if (epoch != orderEpoch)
            {
                order = trainData.EpochOrder(o.Seed, (int)epoch);
                orderEpoch = epoch;
            }
            long firstMicro = step % stepsPerEpoch * o.GradientAccumulation;
            double loss = 0;
            for (int micro = 0; micro < o.GradientAccumulation; micro++)
            {
                var blocks = order.AsSpan((int)((firstMicro + micro) * o.BatchSize), o.BatchSize);
                using var batch = trainData.Batch(blocks);
                loss += lm.ForwardBackward(batch, 1.0 / o.GradientAccumulation, trainData.UntrainedTargets(blocks)) / o.GradientAccumulation;
            }
            if (o.MaxGradNorm > 0)
                optimizer.ClipGradNorm(o.MaxGradNorm);
            // With a time limit the decay follows whichever is further along: the steps or the time.
            double lr = timeLimit is { } limit
                ? schedule.At(step, Math.Max(schedule.Progress(step), TimeSpent() / limit))
                : schedule.At(step);
            optimizer.Step(lr);
            optimizer.ZeroGrad();
            step++;
            tokensSeen += o.TokensPerStep;
            tokensThisSession += o.TokensPerStep;
            lastLoss = loss;
            lossTotal += loss;
            stepsThisSession++;

            double seconds = clock.Elapsed.TotalSeconds;
            double tokensPerSecond = tokensThisSession / Math.Max(seconds, 1e-9);
            double epochProgress = (double)step / stepsPerEpoch;
            if (step % o.LogEvery == 0 || step == totalSteps)
            {
                double etaSeconds = (totalSteps - step) * o.TokensPerStep / Math.Max(tokensPerSecond, 1e-9);
                if (timeLimit is { } left) etaSeconds = Math.Min(etaSeconds, Math.Max(0, left - TimeSpent()));
                var eta = TimeSpan.FromSeconds(etaSeconds);
                log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"step {step}/{totalSteps} | epoch {epochProgress:F2} | loss {loss:F4} | lr {lr:0.00e+00} | {tokensPerSecond:N0} tok/s | ETA {eta:hh\\:mm\\:ss}"));
                Report(metrics, new MetricPoint(step, epochProgress, tokensSeen, loss, lr, tokensPerSecond, null, null, elapsedBefore + seconds), totalSteps);
            }
            AfterStep?.Invoke(step);

            bool evalNow = o.EvalEvery > 0 && step % o.EvalEvery == 0 && step < totalSteps;
            if (evalNow)
            {
                var (eval, titleGain) = Evaluate(lm, evalData, evalSplit, o, $"eval at step {step}");
                lastEval = eval.Loss;
                Report(metrics, new MetricPoint(step, epochProgress, tokensSeen, null, null, null, eval.Loss, eval.Perplexity, elapsedBefore + clock.Elapsed.TotalSeconds, titleGain), totalSteps);
                Save(model, optimizer, o, checkpoint, step, tokensSeen, elapsedBefore + clock.Elapsed.TotalSeconds, lastEval);
            }
        }

        if (!interrupted)
        {
            var (eval, titleGain) = Evaluate(lm, evalData, evalSplit, o, $"final eval at step {step}");
            lastEval = eval.Loss;
            Report(metrics, new MetricPoint(step, (double)step / stepsPerEpoch, tokensSeen, null, null, null, eval.Loss, eval.Perplexity, elapsedBefore + clock.Elapsed.TotalSeconds, titleGain), totalSteps);
        }
        Save(model, optimizer, o, checkpoint, step, tokensSeen, elapsedBefore + clock.Elapsed.TotalSeconds, lastEval);
        metrics.Flush();
        TryPlot(run);
        log.WriteLine(interrupted
            ? $"interrupted after step {step}; checkpoint saved to {checkpoint}. Continue with the same command plus --resume."
            : string.Create(CultureInfo.InvariantCulture, $"done: {step} steps, {tokensSeen:N0} tokens in {(elapsedBefore + clock.Elapsed.TotalSeconds) / 60:F1} minutes of training{(lastEval is { } l ? $", eval perplexity {Math.Exp(l):F2}" : "")}; checkpoint in {checkpoint}"));
        return new TrainResult(step, tokensSeen, lastLoss, stepsThisSession > 0 ? lossTotal / stepsThisSession : null, lastEval, interrupted, checkpoint, clock.Elapsed.TotalSeconds);
    }

    /// <summary>The loss on the eval blocks and, unless turned off, the title gain on the first eval papers; logged.</summary>
    private (LossReport Loss, double? TitleGain) Evaluate(CausalLanguageModel lm, BlockDataset evalData, TokenSplit evalSplit, TrainOptions o, string what)
    {
        var eval = Evaluator.Blocks(lm, evalData, o.BatchSize, o.EvalBlocks);
        TitleGainReport? gain = o.TitleGainPapers > 0 ? Evaluator.TitleGain(lm, evalSplit, o.BlockSize, o.BatchSize, o.TitleGainPapers).SingleOrDefault(r => r.Name == "overall") : null;
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{what}: loss {eval.Loss:F4}, perplexity {eval.Perplexity:F2} ({eval.Tokens:N0} tokens){(gain is null ? "" : $"; title gain {gain.Gain:F4} nats/token ({gain.Examples} papers)")}"));
        return (eval, gain?.Gain);
    }

    private static Gpt CreateModel(TrainOptions o, string checkpoint)
    {
        if (o.Resume)
            return PrepareForTraining(Gpt2Checkpoint.Load(checkpoint), o);
        if (o.Init != "scratch")
            return PrepareForTraining(Gpt2Checkpoint.Load(o.Init, minVocabSize: Gpt2Tokenizer.VocabSize), o);
        var model = new Gpt(o.ScratchConfig());
        model.InitializeWeights(o.Seed);
        return model;
    }

    private static Gpt PrepareForTraining(Gpt loaded, TrainOptions o)
    {
        if (o.Dropout is not { } d || d == loaded.Config.Dropout)
            return loaded;
        // Dropout is fixed when modules are built: rebuild with the new rate and copy the weights over.
        var model = new Gpt(loaded.Config with { Dropout = d });
        using (no_grad())
        {
            var source = loaded.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in model.named_parameters())
                p.copy_(source[name]);
        }
        loaded.Dispose();
        return model;
    }

    private void Save(Gpt model, IOptimizer optimizer, TrainOptions o, string checkpoint, long step, long tokens, double elapsed, double? lastEval)
    {
        var provenance = o.Init == "scratch"
            ? new ModelProvenance("trained-from-scratch", $"{o.ModelSize} ({model.Config.Layers} layers x {model.Config.Embedding} wide) trained from scratch on {Path.GetFullPath(o.DataDirectory)} for {tokens:N0} tokens ({step} steps)", tokens)
            : new ModelProvenance("fine-tuned", $"fine-tuned from {o.Init} on {Path.GetFullPath(o.DataDirectory)} for {tokens:N0} tokens ({step} steps)", tokens, o.Init);
        using var rng = get_rng_state();
        var state = new TrainerState(step, tokens, elapsed, o.TrajectoryKey(), Convert.ToBase64String(rng.bytes), lastEval, optimizer.Kind);
        AtomicWrite.Directory(checkpoint, staging =>
        {
            // The fp32 masters are the model (a bf16 copy is what the forward pass used); saving them keeps
            // a resumed bf16 run exact.
            Gpt2Checkpoint.WriteFiles(model.Config, ScalarType.Float32, optimizer.MasterWeights(), staging, provenance);
            SafeTensorsWriter.Write(Path.Combine(staging, OptimizerFile), optimizer.StateTensors(), new Dictionary<string, string> { ["step"] = step.ToString(CultureInfo.InvariantCulture) });
            File.WriteAllText(Path.Combine(staging, StateFile), JsonSerializer.Serialize(state, s_json));
        });
        log.WriteLine($"saved checkpoint at step {step} to {checkpoint}");
    }

    private void PrintSettings(TrainOptions o, Gpt model, IOptimizer optimizer, BlockDataset train, BlockDataset eval, long stepsPerEpoch, long totalSteps, long startStep)
    {
        var c = model.Config;
        var inv = CultureInfo.InvariantCulture;
        log.WriteLine(string.Create(inv, $"model: {(o.Init == "scratch" ? o.ModelSize + " from scratch" : o.Init)}, {c.Layers} layers x {c.Heads} heads x {c.Embedding} wide, vocabulary {c.VocabSize}, {c.ParameterCount:N0} parameters, dropout {c.Dropout}"));
        log.WriteLine(string.Create(inv, $"data: {o.DataDirectory}: {train.BlockCount:N0} training blocks, {eval.BlockCount:N0} eval blocks of {o.BlockSize} tokens (evaluating {(o.EvalBlocks > 0 ? Math.Min(o.EvalBlocks, eval.BlockCount) : eval.BlockCount):N0} of them)"));
        log.WriteLine(string.Create(inv, $"{o.BatchSize} batch x {o.GradientAccumulation} accum x {o.BlockSize} tokens = {o.TokensPerStep:N0} tokens/step; {stepsPerEpoch:N0} steps/epoch x {o.Epochs} epochs{(o.MaxSteps is { } m ? $", capped at {m:N0} steps" : "")} = {totalSteps:N0} steps, {totalSteps * o.TokensPerStep:N0} tokens{(o.TimeLimitMinutes is { } t ? $", or {t} minutes if sooner (the learning rate decays over that time)" : "")}"));
        string shape = o.Schedule == LearningRateShape.Wsd ? $"wsd, decaying over the last {o.WsdDecayShare * 100:0.#}%" : o.Schedule.ToString().ToLowerInvariant();
        log.WriteLine(string.Create(inv, $"lr {o.LearningRate} ({shape}, {o.WarmupSteps} warm-up steps), clip {o.MaxGradNorm}, {o.Precision.Name()}, seed {o.Seed}"));
        log.WriteLine($"optimizer: {optimizer.Describe()}");
        log.WriteLine($"blocks: {(o.TitleInEveryBlock ? "a block cut inside a paper starts with its <|CAT|> Title <|sep|> and, cut inside the abstract, a second <|sep|> (untrained)" : "run_clm's concatenation")}; loss on {(o.AbstractOnlyLoss ? "abstracts and their <|endoftext|> only (prompts untrained)" : "every token")}");
        if (startStep > 0)
            log.WriteLine($"resuming at step {startStep}");
    }

    private void Report(StreamWriter metrics, MetricPoint point, long totalSteps)
    {
        Write(metrics, point);
        Progress?.Invoke(point, totalSteps);
    }

    private static void Write(StreamWriter metrics, MetricPoint point) =>
        metrics.WriteLine(JsonSerializer.Serialize(point, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull }));

    /// <summary>Reads metrics.jsonl.</summary>
    public static IReadOnlyList<MetricPoint> ReadMetrics(string runDirectory) => ReadMetricsFile(Path.Combine(runDirectory, MetricsFile));

    /// <summary>The points of one metrics file (a run's <see cref="MetricsFile"/>, or a copy kept beside a report); none
    /// where it does not exist.</summary>
    public static IReadOnlyList<MetricPoint> ReadMetricsFile(string path)
    {
        if (!File.Exists(path)) return [];
        var o = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
        return [.. File.ReadLines(path).Where(l => l.Length > 0).Select(l => JsonSerializer.Deserialize<MetricPoint>(l, o)!)];
    }

    // A run interrupted after its last checkpoint logged steps that the resumed run will redo.
    private static void TrimMetrics(string path, long step)
    {
        if (!File.Exists(path)) return;
        var o = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
        var keep = File.ReadLines(path).Where(l => l.Length > 0 && JsonSerializer.Deserialize<MetricPoint>(l, o)!.Step <= step).ToList();
        AtomicWrite.Text(path, string.Concat(keep.Select(l => l + "\n")));
    }

    private void TryPlot(string run)
    {
        try
        {
            var points = ReadMetrics(run);
            LossPlot.Write(points, Path.Combine(run, PlotFile));
            LossPlot.WritePerplexity(points, Path.Combine(run, PerplexityPlotFile));
            LossPlot.WriteTitleGain(points, Path.Combine(run, TitleGainPlotFile));
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or TypeInitializationException or DllNotFoundException)
        {
            log.WriteLine($"note: could not draw {PlotFile}, {PerplexityPlotFile} or {TitleGainPlotFile}: {e.Message}");
        }
    }
}
