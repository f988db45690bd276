using OrleansGpt.Training.Data;
using OrleansGpt.Training.Evaluation;
using OrleansGpt.Training.Loop;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Loop;

[Collection(nameof(GlobalRandomState))]
public sealed class TrainingTests
{
    /// <summary>A model small enough to train for a few steps in a test, with GPT-2's full vocabulary so it can
    /// read prepared data.</summary>
    private static readonly GptConfig s_config = TestModels.TinyGpt2Vocabulary;

    [Fact]
    public void TheChunkedLossAndItsGradientsEqualAPlainCrossEntropyOverAllLogits()
    {
        using var model = TestModels.Random(s_config with { VocabSize = 300 });
        model.train();
        using var blocks = randint(0, 300, [3, 40]); // 3 rows of 39 predictions
        var lm = new CausalLanguageModel(model);
        double chunked = lm.ForwardBackward(blocks, 1.0);
        var chunkedGrads = Grads(model);
        ZeroGrads(model);

        using (var scope = NewDisposeScope())
        {
            var logits = model.forward(blocks); // (B, T, V)
            var loss = nn.functional.cross_entropy(logits.narrow(1, 0, 39).reshape(-1, 300), blocks.narrow(1, 1, 39).reshape(-1));
            Assert.Equal(loss.item<float>(), chunked, 4);
            loss.backward();
        }
        var plainGrads = Grads(model);
        foreach (var (name, grad) in plainGrads)
            Assert.True(MaxRelDiff(grad, chunkedGrads[name]) < 1e-4, $"{name}: {MaxRelDiff(grad, chunkedGrads[name])}");
    }

    [Fact]
    public void UntrainedPositionsAreLeftOutOfTheLossAndItsGradient()
    {
        using var model = TestModels.Random(s_config with { VocabSize = 300 });
        model.train();
        using var blocks = randint(0, 300, [3, 40]);
        // Row 0: a lead of 5 and three scattered positions (a repeated prompt, then prompts under the abstract-only
        // loss); row 1: none; row 2: every one, so it trains nothing.
        var untrained = new bool[3 * 40];
        for (int t = 0; t < 5; t++) untrained[t] = true;
        untrained[12] = untrained[13] = untrained[30] = true;
        for (int t = 0; t < 40; t++) untrained[80 + t] = true;
        double masked = new CausalLanguageModel(model).ForwardBackward(blocks, 1.0, untrained);
        var maskedGrads = Grads(model);
        ZeroGrads(model);

        using (var scope = NewDisposeScope())
        {
            var logits = model.forward(blocks); // (B, T, V)
            var kept = (from b in Enumerable.Range(0, 3) from t in Enumerable.Range(0, 39) where !untrained[b * 40 + t] select (b, t)).ToList();
            var predicted = stack(kept.Select(k => logits[k.b, k.t]).ToList());
            var targets = stack(kept.Select(k => blocks[k.b, k.t + 1]).ToList());
            var loss = nn.functional.cross_entropy(predicted, targets);
            Assert.Equal(loss.item<float>(), masked, 4);
            loss.backward();
        }
        foreach (var (name, grad) in Grads(model))
            Assert.True(MaxRelDiff(grad, maskedGrads[name]) < 1e-4, $"{name}: {MaxRelDiff(grad, maskedGrads[name])}");
        Assert.Throws<ArgumentException>(() => new CausalLanguageModel(model).ForwardBackward(blocks, 1.0, Enumerable.Repeat(true, 120).ToArray()));
        Assert.Throws<ArgumentException>(() => new CausalLanguageModel(model).ForwardBackward(blocks, 1.0, new bool[40])); // one row's flags for three
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheAbstractOnlyLossLeavesOutExactlyThePositionsPredictingAPromptToken(bool titleInEveryBlock)
    {
        using var dir = TestModels.TempDir();
        using var split = TokenSplit.Open(TestData.Prepared(dir.Path), "train");
        // Per stream token: whether it is a prompt's (an example's tokens up to and including its <|sep|>).
        var isPrompt = new bool[split.TokenCount];
        foreach (var e in split.Examples)
        {
            int sep = split.Slice(e.Offset, e.Length).IndexOf((ushort)Gpt2Tokenizer.Separator);
            for (int i = 0; i <= sep; i++) isPrompt[e.Offset + i] = true;
        }
        var data = new BlockDataset(split, 100, titleInEveryBlock: titleInEveryBlock, abstractOnlyLoss: true);
        var same = new BlockDataset(split, 100, titleInEveryBlock: titleInEveryBlock);
        Assert.Equal(same.BlockCount, data.BlockCount); // the blocks are the same; only what is learned from them differs
        int trained = 0, untrained = 0, endings = 0;
        long start = 0; // where each block's share of the stream begins
        for (int b = 0; b < data.BlockCount; b++)
        {
            var flags = data.UntrainedTargets([b])!;
            using var batch = data.Batch([b]);
            long[] row = batch.data<long>().ToArray();
            int lead = data.LeadLength(b);
            for (int t = 0; t < 99; t++)
            {
                // Position t predicts row token t + 1: a repeated prompt's (or the marker), or the stream's at start + t + 1 - lead.
                bool expected = t + 1 < lead || isPrompt[start + t + 1 - lead];
                Assert.True(expected == flags[t], $"block {b} position {t}: expected untrained {expected}");
                if (flags[t]) untrained++;
                else
                {
                    trained++;
                    Assert.NotEqual(Gpt2Tokenizer.Separator, row[t + 1]);
                    endings += row[t + 1] == Gpt2Tokenizer.EndOfText ? 1 : 0;
                }
            }
            start += 100 - lead;
        }
        Assert.True(endings > 0, "no <|endoftext|> was trained: the model would not learn to end an abstract");
        Assert.True(untrained > trained / 10 && trained > untrained, $"{trained} trained, {untrained} untrained"); // prompts ~17 of ~59 tokens
        Assert.Null(new BlockDataset(split, 100).UntrainedTargets([0]));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheTrainersFirstLossIsItsFirstBatchsLossOverTheTargetsItTrains(bool abstractOnlyLoss)
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path, papers: 40, words: 30);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        var options = Options(data, init, dir.Sub("run")) with
        {
            MaxSteps = 1, Dropout = 0, BlockSize = 48, TitleInEveryBlock = true, AbstractOnlyLoss = abstractOnlyLoss, TitleGainPapers = 0,
        };
        new Trainer(options, TextWriter.Null).Run();
        double logged = Trainer.ReadMetrics(dir.Sub("run")).First(m => m.TrainLoss is not null).TrainLoss!.Value;

        // The same first batch scored by hand over the targets the dataset says are trained.
        using var split = TokenSplit.Open(data, "train");
        var blocks = new BlockDataset(split, 48, titleInEveryBlock: true, abstractOnlyLoss: abstractOnlyLoss);
        int[] first = blocks.EpochOrder(options.Seed, 0)[..options.BatchSize];
        using var model = Gpt2Checkpoint.Load(init);
        model.eval(); // no dropout, as the run had none
        using var batch = blocks.Batch(first);
        double expected = new CausalLanguageModel(model).ForwardBackward(batch, 1.0, blocks.UntrainedTargets(first));
        Assert.Equal(expected, logged, 4);
    }

    [Fact]
    public void WithATitleInEveryBlockABlockCutInsideAPaperStartsWithItsPromptAndNoTokenIsSkippedOrRepeated()
    {
        using var dir = TestModels.TempDir();
        using var split = TokenSplit.Open(TestData.Prepared(dir.Path), "train");
        var plain = new BlockDataset(split, 100);
        var titled = new BlockDataset(split, 100, titleInEveryBlock: true);
        Assert.Null(plain.UntrainedTargets([0, 1]));
        var stream = new List<long>();
        int repeated = 0, insideAbstracts = 0, abstractStarts = 0;
        for (int b = 0; b < titled.BlockCount; b++)
        {
            using var batch = titled.Batch([b]);
            long[] row = batch.data<long>().ToArray();
            int lead = titled.LeadLength(b);
            bool marked = titled.HasContinuationMarker(b);
            int prompt = marked ? lead - 1 : lead;
            long start = stream.Count; // where this block's share of the stream begins
            stream.AddRange(row[lead..]);
            var untrained = titled.UntrainedTargets([b])!; // the lead's own targets, its last's excepted
            Assert.Equal(Enumerable.Range(0, 100).Select(t => t < lead - 1), untrained);
            var paper = split.Examples.Last(e => e.Offset <= start);
            if (start == paper.Offset)
            {
                Assert.Equal(0, lead); // a block starting at a paper's start needs nothing repeated
                continue;
            }
            repeated++;
            // The repeated tokens are the paper's own opening, up to the cut or to its <|sep|>, whichever comes first.
            Assert.Equal(split.Slice(paper.Offset, prompt).ToArray().Select(t => (long)t), row[..prompt]);
            int sep = split.Slice(paper.Offset, paper.Length).IndexOf((ushort)Gpt2Tokenizer.Separator);
            Assert.Equal(Math.Min(start - paper.Offset, sep + 1), prompt);
            // Cut past the abstract's first token, a second <|sep|> follows the prompt; otherwise none.
            Assert.Equal(start > paper.Offset + sep + 1, marked);
            if (marked)
            {
                insideAbstracts++;
                Assert.Equal([Gpt2Tokenizer.Separator, Gpt2Tokenizer.Separator], row[(lead - 2)..lead]);
            }
            // What generation relies on: a trained target after a single <|sep|> is its paper's first abstract token.
            if (prompt == sep + 1 && !marked)
            {
                abstractStarts++;
                Assert.Equal(split.Slice(paper.Offset + sep + 1, 1)[0], row[lead]);
            }
        }
        Assert.Equal(split.Slice(0, stream.Count).ToArray().Select(t => (long)t), stream); // the stream in order, each token once
        // Papers here are ~59 tokens, their prompts ~17: cuts fall in abstracts and in titles.
        Assert.True(insideAbstracts > titled.BlockCount / 3, $"{insideAbstracts} of {titled.BlockCount} blocks start inside an abstract");
        Assert.True(repeated > insideAbstracts + abstractStarts, "no block was cut inside a title");
        Assert.True(titled.BlockCount > plain.BlockCount); // the repeated prompts take room, so the stream needs more blocks
    }

    [Fact]
    public void WithATitleInEveryBlockNoTrainedTargetAfterASingleSeparatorIsAnAbstractsMiddle()
    {
        using var dir = TestModels.TempDir();
        using var split = TokenSplit.Open(TestData.Prepared(dir.Path), "train");
        // Per stream token: whether it opens an abstract (follows an example's <|sep|>).
        var opensAbstract = new HashSet<long>();
        foreach (var e in split.Examples)
            opensAbstract.Add(e.Offset + split.Slice(e.Offset, e.Length).IndexOf((ushort)Gpt2Tokenizer.Separator) + 1);
        var titled = new BlockDataset(split, 100, titleInEveryBlock: true);
        int checkedTargets = 0;
        long start = 0;
        for (int b = 0; b < titled.BlockCount; b++)
        {
            using var batch = titled.Batch([b]);
            long[] row = batch.data<long>().ToArray();
            var untrained = titled.UntrainedTargets([b])!;
            int lead = titled.LeadLength(b);
            for (int t = 0; t < 99; t++)
            {
                bool singleSeparator = row[t] == Gpt2Tokenizer.Separator && (t == 0 || row[t - 1] != Gpt2Tokenizer.Separator);
                if (!singleSeparator || untrained[t])
                    continue;
                checkedTargets++;
                long target = start + t + 1 - lead; // the target's place in the stream
                Assert.True(opensAbstract.Contains(target), $"block {b} position {t}: a trained target after <|sep|> is the stream's token {target}, inside an abstract");
            }
            start += 100 - lead;
        }
        Assert.True(checkedTargets > titled.BlockCount / 2, $"only {checkedTargets} targets after a <|sep|> were checked");
    }

    [Fact]
    public void LongBlocksSpanSeveralLossChunksAndStillMatch()
    {
        using var model = TestModels.Random(s_config with { VocabSize = 300, BlockSize = 400 });
        model.train();
        using var blocks = randint(0, 300, [1, 300]); // 299 predictions: chunks of 128, 128, 43
        double chunked = new CausalLanguageModel(model).ForwardBackward(blocks, 1.0);
        using var logits = model.forward(blocks);
        using var loss = nn.functional.cross_entropy(logits.narrow(1, 0, 299).reshape(-1, 300), blocks.narrow(1, 1, 299).reshape(-1));
        Assert.Equal(loss.item<float>(), chunked, 4);
    }

    [Fact]
    public void AccumulatingMicroBatchesGivesTheGradientOfTheWholeBatch()
    {
        using var model = TestModels.Random(s_config with { VocabSize = 300 });
        model.train();
        var lm = new CausalLanguageModel(model);
        using var blocks = randint(0, 300, [8, 24]);

        lm.ForwardBackward(blocks, 1.0); // one step of batch 8
        var whole = Grads(model);
        foreach (int k in new[] { 2, 4, 8 })
        {
            ZeroGrads(model);
            for (int micro = 0; micro < k; micro++)
            {
                using var part = blocks.narrow(0, micro * (8 / k), 8 / k);
                lm.ForwardBackward(part, 1.0 / k); // k micro-steps of batch 8 / k
            }
            foreach (var (name, grad) in Grads(model))
                Assert.True(MaxRelDiff(whole[name], grad) < 1e-5, $"k={k}, {name}: {MaxRelDiff(whole[name], grad)}");
        }
    }

    [Fact]
    public void ATrainingRunWithAccumulationEndsWhereTheSameBatchInOneStepDoes()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        TrainResult Train(int batch, int accum, string name) => new Trainer(Options(data, init, dir.Sub(name)) with { BatchSize = batch, GradientAccumulation = accum, MaxSteps = 3 }, TextWriter.Null).Run();

        Train(4, 1, "one");
        Train(2, 2, "two");
        Train(1, 4, "four");
        using var one = Gpt2Checkpoint.Load(dir.Sub("one"));
        using var two = Gpt2Checkpoint.Load(dir.Sub("two"));
        using var four = Gpt2Checkpoint.Load(dir.Sub("four"));
        // The gradients agree to float rounding (test above); Adam divides by sqrt(v), so where a gradient is
        // near zero that rounding can move a weight by a few percent of one step (lr 1e-3). Runs that saw
        // different blocks differ by whole steps, ~1e-3.
        foreach (var other in new[] { two, four })
        {
            var expected = one.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
            foreach (var (name, p) in other.named_parameters())
                Assert.True(MaxAbsDiff(expected[name], p) < 1e-4, $"{name}: {MaxAbsDiff(expected[name], p)}");
        }
    }

    [Fact]
    public void AnInterruptedRunResumedEndsExactlyWhereAnUninterruptedOneDoes()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        // Dropout on, so the random state has to be restored too; two epochs, so the epoch order is recreated.
        var options = Options(data, init, dir.Sub("straight")) with { Dropout = 0.1, Epochs = 2, EvalEvery = 4 };
        var straight = new Trainer(options, TextWriter.Null).Run();

        using var cancel = new CancellationTokenSource();
        var interrupted = new Trainer(options with { OutputDirectory = dir.Sub("resumed") }, TextWriter.Null) { AfterStep = s => { if (s == 5) cancel.Cancel(); } }.Run(cancel.Token);
        Assert.True(interrupted.Interrupted);
        Assert.Equal(5, interrupted.Steps);
        var resumed = new Trainer(options with { OutputDirectory = dir.Sub("resumed"), Resume = true }, TextWriter.Null).Run();

        Assert.False(resumed.Interrupted);
        Assert.Equal(straight.Steps, resumed.Steps);
        Assert.True(straight.Steps > 5);
        Assert.Equal(straight.TokensSeen, resumed.TokensSeen);
        using var a = Gpt2Checkpoint.Load(dir.Sub("straight"));
        using var b = Gpt2Checkpoint.Load(dir.Sub("resumed"));
        var expected = a.named_parameters().ToDictionary(p => p.name, p => TestModels.Values(p.parameter));
        foreach (var (name, p) in b.named_parameters())
            Assert.Equal(expected[name], TestModels.Values(p)); // bit for bit
        Assert.Equal(straight.EvalLoss, resumed.EvalLoss);

        // The metrics log holds each step once, as the uninterrupted run's does.
        var steps = Trainer.ReadMetrics(dir.Sub("resumed")).Where(m => m.TrainLoss is not null).Select(m => m.Step).ToList();
        Assert.Equal(steps.Distinct().Count(), steps.Count);
        Assert.Equal(Trainer.ReadMetrics(dir.Sub("straight")).Where(m => m.TrainLoss is not null).Select(m => m.Step), steps);
        Assert.True(File.Exists(Path.Combine(dir.Sub("resumed"), Trainer.PlotFile)));
        Assert.True(File.Exists(Path.Combine(dir.Sub("resumed"), Trainer.PerplexityPlotFile)));
        Assert.Equal("fine-tuned", Gpt2Checkpoint.ReadProvenance(dir.Sub("resumed")).Kind);
    }

    [Fact]
    public void Bf16TrainingKeepsFp32MastersLearnsAndResumesExactly()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path, papers: 40, words: 30);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        var options = Options(data, init, dir.Sub("straight")) with { Precision = Precision.Bf16, MaxSteps = 8, LearningRate = 3e-3, Schedule = LearningRateShape.Constant };
        var straight = new Trainer(options, TextWriter.Null).Run();

        using var cancel = new CancellationTokenSource();
        new Trainer(options with { OutputDirectory = dir.Sub("resumed") }, TextWriter.Null) { AfterStep = s => { if (s == 3) cancel.Cancel(); } }.Run(cancel.Token);
        new Trainer(options with { OutputDirectory = dir.Sub("resumed"), Resume = true }, TextWriter.Null).Run();

        // The checkpoint holds the fp32 masters, not bf16-rounded weights.
        using (var reader = new SafeTensorsReader(Path.Combine(dir.Sub("straight"), "checkpoint", Gpt2Checkpoint.WeightsFile)))
            Assert.All(reader.Entries.Values, e => Assert.Equal("F32", e.Dtype));
        using var a = Gpt2Checkpoint.Load(dir.Sub("straight"));
        using var b = Gpt2Checkpoint.Load(dir.Sub("resumed"));
        var expected = a.named_parameters().ToDictionary(p => p.name, p => TestModels.Values(p.parameter));
        foreach (var (name, p) in b.named_parameters())
            Assert.Equal(expected[name], TestModels.Values(p));
        Assert.True(straight.EvalLoss < Evaluate(init, data) - 1, $"bf16 training did not learn: eval loss {straight.EvalLoss}");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void AMuonRunLearnsAccumulatesAndResumesExactly(bool bf16, bool titleInEveryBlock)
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path, papers: 40, words: 30);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        var options = Options(data, init, dir.Sub("straight")) with
        {
            Optimizer = OptimizerKind.Muon, MuonLearningRate = 0.02, LearningRate = 3e-3, GradientAccumulation = 2, MaxSteps = 8,
            Dropout = 0.1, Precision = bf16 ? Precision.Bf16 : Precision.Fp32, Schedule = LearningRateShape.Wsd, WsdDecayShare = 0.5,
            TitleInEveryBlock = titleInEveryBlock, BlockSize = 48,
        };
        var straight = new Trainer(options, TextWriter.Null).Run();

        using var cancel = new CancellationTokenSource();
        new Trainer(options with { OutputDirectory = dir.Sub("resumed") }, TextWriter.Null) { AfterStep = s => { if (s == 3) cancel.Cancel(); } }.Run(cancel.Token);
        var resumed = new Trainer(options with { OutputDirectory = dir.Sub("resumed"), Resume = true }, TextWriter.Null).Run();

        Assert.Equal(straight.Steps, resumed.Steps);
        // Still a Hugging Face GPT-2 checkpoint, fp32 masters included, and the resumed run's weights are the straight run's.
        using var a = Gpt2Checkpoint.Load(dir.Sub("straight"));
        using var b = Gpt2Checkpoint.Load(dir.Sub("resumed"));
        var expected = a.named_parameters().ToDictionary(p => p.name, p => TestModels.Values(p.parameter));
        foreach (var (name, p) in b.named_parameters())
            Assert.Equal(expected[name], TestModels.Values(p));
        using (var reader = new SafeTensorsReader(Path.Combine(dir.Sub("straight"), "checkpoint", Trainer.OptimizerFile)))
            Assert.Contains("muon_momentum.h.0.attn.c_attn.weight", reader.Entries.Keys);
        Assert.True(straight.EvalLoss < Evaluate(init, data) - 1, $"Muon did not learn: eval loss {straight.EvalLoss}");

        // Each evaluation logs the title gain beside the loss, as eval computes it on the same first eval papers.
        var final = Trainer.ReadMetrics(dir.Sub("straight")).Last(m => m.EvalLoss is not null);
        using var model = Gpt2Checkpoint.Load(dir.Sub("straight"));
        using var split = TokenSplit.Open(data, "eval");
        var gain = Evaluator.TitleGain(new CausalLanguageModel(model), split, options.BlockSize, options.BatchSize, options.TitleGainPapers)[^1];
        Assert.Equal(gain.Gain, final.TitleGain!.Value, bf16 ? 2 : 4);
        Assert.True(File.Exists(Path.Combine(dir.Sub("straight"), Trainer.TitleGainPlotFile)));
    }

    [Fact]
    public void AResumeUnderAnotherOptimizerIsRefusedNamingItAndLeavesTheCheckpointAlone()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        var options = Options(data, init, dir.Sub("run")) with { MaxSteps = 2, TitleGainPapers = 0 };
        new Trainer(options, TextWriter.Null).Run();
        Assert.All(Trainer.ReadMetrics(dir.Sub("run")), m => Assert.Null(m.TitleGain)); // measured only when asked for
        string checkpoint = Path.Combine(dir.Sub("run"), Trainer.CheckpointFolder);
        var before = Directory.GetFiles(checkpoint).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

        var error = Assert.Throws<ArgumentException>(() => new Trainer(options with { Resume = true, Optimizer = OptimizerKind.Muon }, TextWriter.Null).Run());
        Assert.Contains("--optimizer adamw", error.Message);
        var after = Directory.GetFiles(checkpoint).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        Assert.All(before, f => Assert.Equal(f.Value, after[f.Key]));

        // And the other way: a Muon run resumed as AdamW.
        var muon = options with { OutputDirectory = dir.Sub("muon"), Optimizer = OptimizerKind.Muon };
        new Trainer(muon, TextWriter.Null).Run();
        Assert.Contains("--optimizer muon", Assert.Throws<ArgumentException>(() => new Trainer(muon with { Resume = true, Optimizer = OptimizerKind.AdamW }, TextWriter.Null).Run()).Message);
        Assert.Contains("--muon-lr", Assert.Throws<ArgumentOutOfRangeException>(() => (muon with { MuonLearningRate = -1 }).Validate()).Message);
        Assert.Contains("--muon-momentum", Assert.Throws<ArgumentOutOfRangeException>(() => (muon with { MuonMomentum = 1 }).Validate()).Message);
        Assert.Contains("--wsd-decay", Assert.Throws<ArgumentOutOfRangeException>(() => (muon with { WsdDecayShare = 0 }).Validate()).Message);
    }

    [Fact]
    public void ARunRefusesToOverwriteACheckpointAndToResumeWithOtherSettings()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        var options = Options(data, init, dir.Sub("run")) with { MaxSteps = 2 };
        new Trainer(options, TextWriter.Null).Run();
        Assert.Contains("--resume", Assert.Throws<IOException>(() => new Trainer(options, TextWriter.Null).Run()).Message);
        Assert.Contains("settings of the run it continues", Assert.Throws<ArgumentException>(() => new Trainer(options with { Resume = true, LearningRate = 1 }, TextWriter.Null).Run()).Message);
        Assert.Throws<FileNotFoundException>(() => new Trainer(options with { OutputDirectory = dir.Sub("none"), Resume = true }, TextWriter.Null).Run());
    }

    [Fact]
    public void TrainingLowersTheLoss()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path, papers: 40, words: 30);
        string init = WriteInitialCheckpoint(dir.Sub("init"));
        var untrained = Evaluate(dir.Sub("init"), data);
        new Trainer(Options(data, init, dir.Sub("run")) with { MaxSteps = 30, LearningRate = 3e-3, Schedule = LearningRateShape.Constant }, TextWriter.Null).Run();
        var trained = Evaluate(dir.Sub("run"), data);
        Assert.True(trained < untrained - 2, $"eval loss {untrained:F3} -> {trained:F3}");
    }

    [Fact]
    public void PerCategoryEvaluationDoesNotDependOnHowExamplesAreBatched()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path);
        using var model = TestModels.Random(s_config);
        using var split = TokenSplit.Open(data, "train");
        var lm = new CausalLanguageModel(model);
        var one = Evaluator.PerCategory(lm, split, 64, batchSize: 1);
        var many = Evaluator.PerCategory(lm, split, 64, batchSize: 7);
        Assert.Equal(["cs.AI", "cs.LG", "cs.CL", "cs.CV", "overall"], one.Select(r => r.Name));
        for (int i = 0; i < one.Count; i++)
        {
            Assert.Equal(one[i].Tokens, many[i].Tokens);
            Assert.Equal(one[i].Loss, many[i].Loss, 4);
        }
        double weighted = one.Take(4).Sum(r => r.Loss * r.Tokens) / one.Take(4).Sum(r => r.Tokens);
        Assert.Equal(weighted, one[4].Loss, 9);
        Assert.Equal(split.Examples.Count, one[4].Examples);
    }

    [Fact]
    public void AdamWTakesTorchsStepAndSkipsDecayOnBiasesAndLayerNorms()
    {
        using var w = new Parameter(tensor(new[] { 1f }));
        using var b = new Parameter(tensor(new[] { 1f }));
        w.grad = tensor(new[] { 0.5f });
        b.grad = tensor(new[] { 0.5f });
        using var optimizer = new AdamW([("h.0.mlp.c_fc.weight", w), ("h.0.mlp.c_fc.bias", b)], weightDecay: 0.01);
        optimizer.Step(0.1);
        // torch.optim.AdamW, step 1: p *= 1 - lr * wd; m = 0.05, v = 0.00025; p -= lr / (1 - 0.9) * m / (sqrt(v / (1 - 0.999)) + eps)
        Assert.Equal(0.999 - 0.1, w.item<float>(), 5);
        Assert.Equal(1.0 - 0.1, b.item<float>(), 5);
        Assert.False(AdamW.UsesWeightDecay("ln_f.weight"));
        Assert.False(AdamW.UsesWeightDecay("h.3.ln_2.weight"));
        Assert.True(AdamW.UsesWeightDecay("wte.weight"));
    }

    [Fact]
    public void LearningRateSchedulesWarmUpThenDecayToZero()
    {
        var linear = new LearningRateSchedule(1.0, LearningRateShape.Linear, WarmupSteps: 10, TotalSteps: 110);
        Assert.Equal(0.1, linear.At(0), 9);
        Assert.Equal(1.0, linear.At(9), 9);
        Assert.Equal(0.5, linear.At(60), 9);
        Assert.Equal(0.0, linear.At(110), 9);
        var cosine = linear with { Shape = LearningRateShape.Cosine };
        Assert.Equal(0.5, cosine.At(60), 9);
        Assert.True(cosine.At(30) > linear.At(30));
        Assert.Equal(1.0, (linear with { Shape = LearningRateShape.Constant }).At(100), 9);
        // Warm-up, stable, decay: the peak until 80% of the decay's way (step 90 of 10..110), then linearly to 0.
        var wsd = linear with { Shape = LearningRateShape.Wsd };
        Assert.Equal(0.1, wsd.At(0), 9);
        Assert.Equal(1.0, wsd.At(90), 9);
        Assert.Equal(0.5, wsd.At(100), 9);
        Assert.Equal(0.0, wsd.At(110), 9);
        // A decay share of one half: the peak until step 60, half of it at step 85.
        var half = wsd with { WsdDecayShare = 0.5 };
        Assert.Equal(1.0, half.At(60), 9);
        Assert.Equal(0.5, half.At(85), 9);
    }

    [Fact]
    public void ATimeLimitedScheduleWarmsUpBySteps()
    {
        var cosine = new LearningRateSchedule(1.0, LearningRateShape.Cosine, WarmupSteps: 10, TotalSteps: 1_000);
        Assert.Equal(0.1, cosine.At(0, progress: 0.9), 9);     // warm-up counts steps, whatever the time
        Assert.Equal(0.5, cosine.At(50, progress: 0.5), 9);    // then the decay follows the progress given
        Assert.Equal(0.0, cosine.At(50, progress: 1.5), 9);
        Assert.Equal(cosine.At(505), cosine.At(505, cosine.Progress(505)), 12);
    }

    [Fact]
    public void ATimeLimitStopsTheRunDecaysTheRateOverTheTimeAndTheShapeOverridesBuildTheModel()
    {
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path);
        // 300 steps would take over 30 s at 0.1 s each; the limit of 0.6 s leaves a handful.
        var options = Options(data, "scratch", dir.Sub("run")) with
        {
            ModelSize = "tiny", Layers = 1, Width = 64, MaxSteps = 300, Epochs = 100, WarmupSteps = 0, TimeLimitMinutes = 0.01,
        };
        var result = new Trainer(options, TextWriter.Null) { AfterStep = _ => Thread.Sleep(100) }.Run();

        Assert.False(result.Interrupted);
        Assert.InRange(result.Steps, 1, 20);
        Assert.NotNull(result.EvalLoss);
        var rates = Trainer.ReadMetrics(dir.Sub("run")).Where(m => m.LearningRate is not null).Select(m => m.LearningRate!.Value).ToList();
        Assert.True(rates[^1] < 0.7 * options.LearningRate, $"the rate fell only to {rates[^1]} by the end of the time"); // by steps it would still be ~0.98 of the peak
        using var model = Gpt2Checkpoint.Load(dir.Sub("run"));
        Assert.Equal((1, 64, 1), (model.Config.Layers, model.Config.Embedding, model.Config.Heads)); // heads: width / 64
        Assert.Contains("1 layers x 64 wide", Gpt2Checkpoint.ReadProvenance(dir.Sub("run")).Description);

        Assert.Throws<ArgumentException>(() => (options with { Init = dir.Sub("run") }).Validate());
        Assert.Equal(4, (options with { Heads = 4 }).ScratchConfig().Heads);
    }

    [Fact]
    public void TheDataOrderIsAPermutationFixedBySeedAndEpoch()
    {
        using var dir = TestModels.TempDir();
        using var split = TokenSplit.Open(TestData.Prepared(dir.Path), "train");
        var data = new BlockDataset(split, 16);
        var order = data.EpochOrder(seed: 3, epoch: 0);
        Assert.Equal(Enumerable.Range(0, data.BlockCount), order.Order());
        Assert.Equal(order, data.EpochOrder(3, 0));
        Assert.NotEqual(order, data.EpochOrder(3, 1));
        Assert.NotEqual(order, data.EpochOrder(4, 0));
        using var batch = data.Batch([0, 1]);
        Assert.Equal(split.Slice(0, 32).ToArray().Select(t => (long)t), batch.reshape(-1).data<long>().ToArray());
    }

    private static TrainOptions Options(string data, string init, string output) => new()
    {
        DataDirectory = data, OutputDirectory = output, Init = init, BlockSize = 32, BatchSize = 2, GradientAccumulation = 1,
        LearningRate = 1e-3, Epochs = 1, MaxSteps = null, WarmupSteps = 2, Schedule = LearningRateShape.Linear, EvalBlocks = 4, Seed = 7, LogEvery = 1,
    };

    private static string WriteInitialCheckpoint(string path)
    {
        using var model = TestModels.Random(s_config, seed: 11);
        Gpt2Checkpoint.Save(model, path, new ModelProvenance("untrained", "test start"));
        return path;
    }

    private static double Evaluate(string checkpoint, string data)
    {
        using var model = Gpt2Checkpoint.Load(checkpoint);
        using var split = TokenSplit.Open(data, "eval");
        return Evaluator.PerCategory(new CausalLanguageModel(model), split, 64, 8)[^1].Loss;
    }

    private static Dictionary<string, Tensor> Grads(Gpt model) =>
        model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.detach().clone());

    private static void ZeroGrads(Gpt model)
    {
        foreach (var (_, p) in model.named_parameters()) p.grad?.zero_();
    }

    private static double MaxRelDiff(Tensor a, Tensor b)
    {
        using var diff = (a - b).abs().max();
        using var scale = a.abs().max();
        return diff.item<float>() / Math.Max(scale.item<float>(), 1e-12);
    }

    private static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var diff = (a - b).abs().max();
        return diff.item<float>();
    }
}
