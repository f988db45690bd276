using OrleansGpt.Training.Model;

namespace OrleansGpt.Training.Loop;

/// <summary>
/// One training run's settings. Defaults are the paper's: block size 512, batch 8, gradient accumulation 1,
/// learning rate 5e-5, 3 epochs (fine-tuning values; training from scratch wants a larger rate).
/// </summary>
public sealed record TrainOptions
{
    /// <summary>A directory written by the prepare command.</summary>
    public required string DataDirectory { get; init; }

    /// <summary>The run directory: checkpoint/, metrics.jsonl, loss.png.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>Model size for --init scratch (tiny, distil, small, ...).</summary>
    public string ModelSize { get; init; } = "tiny";

    /// <summary>Overrides of the preset's shape for --init scratch: layers (n_layer), heads (n_head), width (n_embd);
    /// null keeps the preset's. Heads default to width / 64 when only the width is given (GPT-2's head size).</summary>
    public int? Layers { get; init; }
    public int? Heads { get; init; }
    public int? Width { get; init; }

    /// <summary>Stop once the run has taken this many minutes (evaluations included), and decay the learning rate
    /// over that time instead of over the steps: runs of different shapes and speeds then compare at equal cost.
    /// Null: the steps decide.</summary>
    public double? TimeLimitMinutes { get; init; }

    /// <summary>"scratch", or a checkpoint directory to fine-tune (ours or a Hugging Face download).</summary>
    public string Init { get; init; } = "scratch";

    public int BlockSize { get; init; } = 512;
    public int BatchSize { get; init; } = 8;
    public int GradientAccumulation { get; init; } = 1;
    public double LearningRate { get; init; } = 5e-5;
    public int Epochs { get; init; } = 3;
    public double WeightDecay { get; init; }

    /// <summary>AdamW's second-moment decay: torch's 0.999 by default; 0.95 (GPT-3, nanoGPT) forgets an early
    /// burst of large gradients sooner, which keeps high learning rates stable in short runs from scratch.</summary>
    public double Beta2 { get; init; } = 0.999;
    public long WarmupSteps { get; init; }
    public LearningRateShape Schedule { get; init; } = LearningRateShape.Linear;

    /// <summary>The share of the run a wsd schedule spends decaying (<see cref="LearningRateSchedule.DefaultWsdDecayShare"/>).</summary>
    public double WsdDecayShare { get; init; } = LearningRateSchedule.DefaultWsdDecayShare;

    /// <summary>AdamW for every parameter, or Muon for the blocks' matrices and AdamW for the rest.</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;

    /// <summary>Muon's peak rate; it follows the schedule as --lr does (Keller Jordan's 0.02).</summary>
    public double MuonLearningRate { get; init; } = Muon.DefaultLearningRate;

    /// <summary>Muon's momentum (Nesterov), 0.95 as in modded-nanogpt and torch.optim.Muon.</summary>
    public double MuonMomentum { get; init; } = Muon.DefaultMomentum;

    /// <summary>Stop after this many optimizer steps (and size the schedule to it); null: the epochs decide.</summary>
    public long? MaxSteps { get; init; }

    /// <summary>Evaluate (and checkpoint) every N steps; 0: only at the end.</summary>
    public int EvalEvery { get; init; }

    /// <summary>Eval blocks per evaluation during training (0 = the whole eval split).</summary>
    public int EvalBlocks { get; init; } = 64;

    /// <summary>Each evaluation also measures the title gain on the first N eval papers (0: not measured); it changes
    /// nothing in training, so a resumed run may change it.</summary>
    public int TitleGainPapers { get; init; } = 100;

    /// <summary>A training block cut inside a paper starts with that paper's prompt (<see cref="BlockDataset"/>), so every
    /// abstract token is learned with its title in view. Evaluation blocks stay run_clm's.</summary>
    public bool TitleInEveryBlock { get; init; }

    /// <summary>Train only on predicting abstracts: a position whose next token belongs to a paper's
    /// <c>&lt;|CAT|&gt; Title &lt;|sep|&gt;</c> is left out of the loss (<see cref="BlockDataset"/>), so the model's capacity goes to
    /// what generation asks of it. Evaluation still scores every token.</summary>
    public bool AbstractOnlyLoss { get; init; }

    /// <summary>Use only the first N training blocks (a subset, for sweeps); null: all.</summary>
    public long? MaxTrainBlocks { get; init; }

    public long Seed { get; init; } = 42;
    public Precision Precision { get; init; } = Precision.Fp32;

    /// <summary>Gradients are clipped to this global L2 norm (Hugging Face's default 1.0); 0 turns it off.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Print and log every N steps.</summary>
    public int LogEvery { get; init; } = 10;

    /// <summary>Continue from the run directory's checkpoint.</summary>
    public bool Resume { get; init; }

    /// <summary>Overrides the model's dropout (0.1 in GPT-2); null keeps it.</summary>
    public double? Dropout { get; init; }

    /// <summary>Tokens one optimizer step trains on.</summary>
    public long TokensPerStep => (long)BatchSize * GradientAccumulation * BlockSize;

    /// <summary>Throws for settings no run can use.</summary>
    public TrainOptions Validate()
    {
        if (BlockSize < 2) throw new ArgumentOutOfRangeException(nameof(BlockSize), BlockSize, "--block-size must be at least 2");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "--batch-size must be at least 1");
        if (GradientAccumulation < 1) throw new ArgumentOutOfRangeException(nameof(GradientAccumulation), GradientAccumulation, "--grad-accum must be at least 1");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "--lr must be positive");
        if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "--epochs must be at least 1");
        if (WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "--weight-decay must be >= 0");
        if (!(Beta2 is > 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "--beta2 must be in (0, 1)");
        if (!(WsdDecayShare is > 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(WsdDecayShare), WsdDecayShare, "--wsd-decay must be in (0, 1]: the share of the run spent decaying");
        if (!Enum.IsDefined(Optimizer)) throw new ArgumentOutOfRangeException(nameof(Optimizer), Optimizer, "--optimizer must be adamw or muon");
        if (!(MuonLearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(MuonLearningRate), MuonLearningRate, "--muon-lr must be positive");
        if (!(MuonMomentum is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(MuonMomentum), MuonMomentum, "--muon-momentum must be in [0, 1)");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, "--warmup-steps must be >= 0");
        if (MaxSteps is < 1) throw new ArgumentOutOfRangeException(nameof(MaxSteps), MaxSteps, "--max-steps must be at least 1");
        if (TitleGainPapers < 0) throw new ArgumentOutOfRangeException(nameof(TitleGainPapers), TitleGainPapers, "--title-gain-papers must be >= 0");
        if (EvalEvery < 0 || LogEvery < 1) throw new ArgumentOutOfRangeException(nameof(EvalEvery), "--eval-every must be >= 0 and --log-every >= 1");
        if (Dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "--dropout must be in [0, 1)");
        if (Layers is < 1) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "--layers must be at least 1");
        if (Heads is < 1) throw new ArgumentOutOfRangeException(nameof(Heads), Heads, "--heads must be at least 1");
        if (Width is < 1) throw new ArgumentOutOfRangeException(nameof(Width), Width, "--width must be at least 1");
        if (!(TimeLimitMinutes is null or > 0)) throw new ArgumentOutOfRangeException(nameof(TimeLimitMinutes), TimeLimitMinutes, "--time-limit must be a positive number of minutes");
        if (Init != "scratch" && (Layers ?? Heads ?? Width) is not null)
            throw new ArgumentException("--layers, --heads and --width shape a model trained from scratch; a checkpoint given as --init keeps its own shape");
        return this;
    }

    /// <summary>The settings a resumed run must share with the run it continues: they fix the data order and the
    /// learning-rate schedule.</summary>
    public string TrajectoryKey() =>
        string.Join(";", ModelSize, Init, BlockSize, BatchSize, GradientAccumulation, LearningRate.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            Epochs, WeightDecay.ToString("R", System.Globalization.CultureInfo.InvariantCulture), WarmupSteps, Schedule, MaxSteps, MaxTrainBlocks, Seed, Precision,
            MaxGradNorm.ToString("R", System.Globalization.CultureInfo.InvariantCulture), Dropout, Path.GetFullPath(DataDirectory),
            Layers, Heads, Width, TimeLimitMinutes?.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            Beta2.ToString("R", System.Globalization.CultureInfo.InvariantCulture))
        // Appended only where they differ from the defaults, so runs saved before these settings existed still resume.
        + (Schedule == LearningRateShape.Wsd && WsdDecayShare != LearningRateSchedule.DefaultWsdDecayShare ? ";wsd-decay=" + WsdDecayShare.ToString("R", System.Globalization.CultureInfo.InvariantCulture) : "")
        // The continuation marker changed the blocks, so a run saved with the option before it does not resume under it.
        + (TitleInEveryBlock ? ";title-in-every-block+continuation-marker" : "")
        + (AbstractOnlyLoss ? ";abstract-only-loss" : "")
        + (Optimizer == OptimizerKind.Muon ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $";muon-lr={MuonLearningRate:R};muon-momentum={MuonMomentum:R}") : "");

    /// <summary>The model a run from scratch builds: the preset with the shape overrides and dropout applied.</summary>
    public GptConfig ScratchConfig()
    {
        var config = GptConfig.FromPreset(ModelSize);
        if (Layers is { } layers) config = config with { Layers = layers };
        if (Width is { } width) config = config with { Embedding = width, Heads = Heads ?? Math.Max(1, width / 64) };
        if (Heads is { } heads) config = config with { Heads = heads };
        if (Dropout is { } d) config = config with { Dropout = d };
        return config.Validate();
    }
}
