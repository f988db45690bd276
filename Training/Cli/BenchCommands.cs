using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Loop;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Cli;

/// <summary>bench gemm and bench decode: numbers, printed, never asserted.</summary>
internal static class BenchCommands
{
    public static void AddTo(RootCommand root)
    {
        var bench = new Command("bench", "Measure this machine: matmul throughput, decoding and training speed");
        bench.Subcommands.Add(GemmCommand());
        bench.Subcommands.Add(DecodeCommand());
        bench.Subcommands.Add(TrainCommand());
        bench.Subcommands.Add(ServeCommand());
        bench.Subcommands.Add(ProfileCommand());
        root.Subcommands.Add(bench);
    }

    private static Command GemmCommand()
    {
        var size = new Option<int>("--size") { Description = "Square matrix size n (n x n times n x n)", DefaultValueFactory = _ => 2048 };
        var seconds = new Option<double>("--seconds") { Description = "Time to spend per dtype", DefaultValueFactory = _ => 2.0 };
        var command = new Command("gemm", "Print measured matmul GFLOP/s in fp32 and bf16: the ceiling other figures are read against") { size, seconds };
        command.SetHandler(r =>
        {
            int n = r.GetValue(size);
            Console.WriteLine($"threads {get_num_threads()}, native bf16 {(PrecisionSupport.CpuHasNativeBf16 ? "yes" : "no")}, own kernels {Simd.Path}");
            foreach (var precision in new[] { Precision.Fp32, Precision.Bf16 })
            {
                if (precision == Precision.Bf16 && !PrecisionSupport.CpuHasNativeBf16)
                {
                    // Measured once on Zen 3: 0.3 GFLOP/s, minutes for one product of 2048; nothing here runs bf16 GEMMs on such a CPU.
                    Console.WriteLine($"gemm {n}x{n}x{n} bf16: skipped, libtorch emulates bf16 products without avx512_bf16/amx_bf16 (training uses fp32; decoding widens bf16 weights in registers)");
                    continue;
                }
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"gemm {n}x{n}x{n} {precision.Name()}: {MeasureGemm(n, precision.ToScalarType(), r.GetValue(seconds)):F1} GFLOP/s"));
            }
            return 0;
        });
        return command;
    }

    /// <summary>Median GFLOP/s of n x n x n matrix products over about <paramref name="seconds"/>.</summary>
    public static double MeasureGemm(int n, ScalarType dtype, double seconds)
    {
        using var scope = NewDisposeScope();
        var a = randn(n, n).to(dtype);
        var b = randn(n, n).to(dtype);
        for (int i = 0; i < 2; i++) matmul(a, b).Dispose(); // warm up threads and caches
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (total.Elapsed.TotalSeconds < seconds || times.Count < 3)
        {
            var sw = Stopwatch.StartNew();
            matmul(a, b).Dispose();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return 2.0 * n * n * (double)n / times[times.Count / 2] / 1e9;
    }

    private static Command ServeCommand()
    {
        var model = RandomModelOption();
        var dtype = CommandLine.DtypeOption("bf16");
        var concurrency = new Option<string>("--concurrency") { Description = "Concurrent requests, comma-separated (the engine gets that many slots)", DefaultValueFactory = _ => "1,8,32" };
        var requests = new Option<int>("--requests") { Description = "Requests per concurrency level", DefaultValueFactory = _ => 64 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length (random token ids)", DefaultValueFactory = _ => 32 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens generated per request", DefaultValueFactory = _ => 64 };
        var samplingThreads = new Option<string>("--sampling-threads") { Description = "Threads sampling a step's rows, comma-separated to compare (1: the engine thread alone)", DefaultValueFactory = _ => Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture) };
        var kernel = CommandLine.KernelOption();
        var command = new Command("serve", "The continuous-batching engine alone, in process (no Orleans, no client): tok/s, time to first token, and where the decode thread's time goes")
        {
            model, dtype, concurrency, requests, promptTokens, maxTokens, samplingThreads, kernel,
        };
        command.SetHandler(r => ServeAsync(r).GetAwaiter().GetResult());
        return command;

        async Task<int> ServeAsync(ParseResult r)
        {
            var precision = CommandLine.ResolvePrecision(r.GetValue(dtype)!, decoding: true);
            using var gpt = RandomModel(GptConfig.FromPreset(r.GetValue(model)!), precision);
            TokenSampler.WarmUp(); // here, not in the first level's first request
            int prompt = r.GetValue(promptTokens), newTokens = r.GetValue(maxTokens), total = r.GetValue(requests);
            Console.WriteLine($"{r.GetValue(model)} {precision.Name()}, random weights; {prompt}-token prompts, {newTokens} new tokens, top-p 0.9; threads {get_num_threads()}; own kernels {Simd.Path}, native bf16 {(PrecisionSupport.CpuHasNativeBf16 ? "yes" : "no")}");
            Console.WriteLine("| concurrency | kernel | sampling threads | tok/s | TTFT p50 ms | TTFT p99 ms | decode ms/step | rows/step | sampling ms/row | prefill s | decode s | sampling s |");
            Console.WriteLine("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            int[] threadCounts = CommandLine.ParseIntList(r.GetValue(samplingThreads)!, "--sampling-threads");
            bool[] kernels = CommandLine.ParseKernels(r.GetValue(kernel)!);
            foreach (int c in CommandLine.ParseIntList(r.GetValue(concurrency)!, "--concurrency"))
            foreach (bool own in kernels)
            foreach (int threads in threadCounts)
            {
                DecodeKernels.Enabled = own;
                using var engine = new ContinuousBatcher(gpt, new BatcherOptions { Slots = c, MaxQueue = c, MaxPromptTokens = prompt, MaxNewTokens = newTokens, SamplingThreads = threads, Name = "bench" });
                var ttft = new List<double>();
                long tokens = 0;
                int next = 0;
                var clock = Stopwatch.StartNew();
                await Task.WhenAll(Enumerable.Range(0, c).Select(_ => Task.Run(async () =>
                {
                    int id;
                    while ((id = Interlocked.Increment(ref next)) <= total)
                    {
                        var random = new Random(id);
                        int[] ids = [.. Enumerable.Range(0, prompt).Select(_ => random.Next(50000))];
                        var sw = Stopwatch.StartNew();
                        bool first = true;
                        await foreach (var token in engine.GenerateAsync(ids, new SamplingSettings { TopP = 0.9, MaxNewTokens = newTokens, Seed = id }))
                        {
                            if (first) lock (ttft) ttft.Add(sw.Elapsed.TotalMilliseconds);
                            first = false;
                            Interlocked.Increment(ref tokens);
                        }
                    }
                })));
                double seconds = clock.Elapsed.TotalSeconds;
                var t = engine.Timings;
                ttft.Sort();
                double Percentile(double p) => ttft[Math.Min(ttft.Count - 1, (int)Math.Ceiling(p * ttft.Count) - 1)];
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {c} | {CommandLine.KernelName(own)} | {threads} | {tokens / seconds:F1} | {Percentile(0.5):F0} | {Percentile(0.99):F0} | {EngineTimingsMs(t.DecodeTicks, engine.Steps):F1} | {(double)t.DecodeRows / Math.Max(1, engine.Steps):F1} | " +
                    $"{EngineTimingsMs(t.SamplingTicks, tokens):F2} | {ContinuousBatcher.EngineTimings.Seconds(t.PrefillTicks):F1} | {ContinuousBatcher.EngineTimings.Seconds(t.DecodeTicks):F1} | {ContinuousBatcher.EngineTimings.Seconds(t.SamplingTicks):F1} |"));
            }
            return 0;
        }

        static double EngineTimingsMs(long ticks, long count) => ContinuousBatcher.EngineTimings.Seconds(ticks) * 1000 / Math.Max(1, count);
    }

    private static Command ProfileCommand()
    {
        var model = RandomModelOption();
        var dtype = CommandLine.DtypeOption("bf16");
        var batches = new Option<string>("--batch") { Description = "Rows per decode step, comma-separated", DefaultValueFactory = _ => "1,8,32" };
        var context = new Option<int>("--context") { Description = "Positions each row attends to (a 32-token prompt halfway through 128 new tokens: 96)", DefaultValueFactory = _ => 96 };
        var repeats = new Option<int>("--repeats") { Description = "Timed repeats of each part (the median is printed)", DefaultValueFactory = _ => 21 };
        var kernel = CommandLine.KernelOption();
        kernel.Description = $"Decode steps: own (products of up to {SmallBatchMatMul.MaxRowsText}, and attention) or torch";
        var command = new Command("profile", "Print where one decode step's time goes (each part timed alone at the step's shapes) beside the whole step timed through the engine's path")
        {
            model, dtype, batches, context, repeats, kernel,
        };
        command.SetHandler(r =>
        {
            bool[] kernels = CommandLine.ParseKernels(r.GetValue(kernel)!);
            if (kernels.Length != 1) throw new ArgumentException("--kernel takes one value here (own or torch)");
            DecodeKernels.Enabled = kernels[0];
            var precision = CommandLine.ResolvePrecision(r.GetValue(dtype)!, decoding: true);
            int[] rows = CommandLine.ParseIntList(r.GetValue(batches)!, "--batch");
            int L = r.GetValue(context), n = r.GetValue(repeats);
            if (n < 1) throw new ArgumentException("--repeats must be at least 1");
            using var gpt = RandomModel(GptConfig.FromPreset(r.GetValue(model)!), precision);
            if (L < 2 || L + n + 3 > gpt.Config.BlockSize)
                throw new ArgumentException($"--context {L} must be at least 2 and leave room for {n + 3} steps in the block size {gpt.Config.BlockSize}");
            var results = rows.Select(b => DecodeProfile.Measure(gpt, b, L, n)).ToArray();
            Console.WriteLine($"{r.GetValue(model)} {precision.Name()}, random weights, {L} positions attended, threads {get_num_threads()}, kernel {CommandLine.KernelName(kernels[0])} ({Simd.Path}); ms per decode step (share of the whole step)");
            Console.WriteLine($"| part | {string.Join(" | ", rows.Select(b => $"{b} row{(b == 1 ? "" : "s")}"))} |");
            Console.WriteLine($"|---|{string.Concat(rows.Select(_ => "---:|"))}");
            string Cell(double ms, double step) => string.Create(CultureInfo.InvariantCulture, $"{ms:F2} ({ms / step:P0})");
            for (int i = 0; i < results[0].Parts.Count; i++)
                Console.WriteLine($"| {results[0].Parts[i].Name} | {string.Join(" | ", results.Select(x => Cell(x.Parts[i].Milliseconds, x.Step)))} |");
            Console.WriteLine($"| sum of the parts | {string.Join(" | ", results.Select(x => Cell(x.PartsTotal, x.Step)))} |");
            Console.WriteLine($"| **whole step (engine path)** | {string.Join(" | ", results.Select(x => string.Create(CultureInfo.InvariantCulture, $"**{x.Step:F2}**")))} |");
            Console.WriteLine($"| the same step as a fixed batch (one cache, rows in lockstep) | {string.Join(" | ", results.Select(x => Cell(x.FixedBatch, x.Step)))} |");
            Console.WriteLine($"| step minus parts (calls, allocation, weights streamed from memory) | {string.Join(" | ", results.Select(x => Cell(x.Step - x.PartsTotal, x.Step)))} |");
            Console.WriteLine($"| the same step on a skeleton model (8 per head, 1k vocabulary): the calls alone | {string.Join(" | ", results.Select(x => Cell(x.Floor, x.Step)))} |");
            Console.WriteLine($"| tok/s at this step time | {string.Join(" | ", rows.Zip(results, (b, x) => string.Create(CultureInfo.InvariantCulture, $"{b * 1000 / x.Step:F0}")))} |");
            return 0;
        });
        return command;
    }

    private static Command DecodeCommand()
    {
        var model = RandomModelOption();
        var checkpoint = new Option<string>("--checkpoint") { Description = "Benchmark this checkpoint instead of a random model" };
        var batches = new Option<string>("--batch") { Description = "Batch sizes, comma-separated", DefaultValueFactory = _ => "1,8" };
        var dtypes = new Option<string>("--dtype") { Description = "Precisions, comma-separated (fp32, bf16)", DefaultValueFactory = _ => "fp32,bf16" };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length per sequence", DefaultValueFactory = _ => 64 };
        var newTokens = new Option<int>("--new-tokens") { Description = "Tokens to decode per sequence", DefaultValueFactory = _ => 48 };
        var kernel = CommandLine.KernelOption();
        var command = new Command("decode", "Print prefill and decode tokens/s and ms per step for each batch size (nucleus sampling with top-p 0.9 included)")
        {
            model, checkpoint, batches, dtypes, promptTokens, newTokens, kernel,
        };
        command.SetHandler(r =>
        {
            int[] batchSizes = CommandLine.ParseIntList(r.GetValue(batches)!, "--batch");
            var precisions = r.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(d => CommandLine.ResolvePrecision(d, decoding: true)).Distinct().ToArray();
            int p = r.GetValue(promptTokens), steps = r.GetValue(newTokens);
            Console.WriteLine($"threads {get_num_threads()}, native bf16 {(PrecisionSupport.CpuHasNativeBf16 ? "yes" : "no")}, own kernels {Simd.Path}, prompt {p} tokens, {steps} new tokens per sequence");
            bool[] kernels = CommandLine.ParseKernels(r.GetValue(kernel)!);
            Console.WriteLine("| model | dtype | batch | kernel | prefill tok/s | prefill ms | decode tok/s | ms/step |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|");
            foreach (var precision in precisions)
            {
                using var gpt = r.GetValue(checkpoint) is { } dir
                    ? Gpt2Checkpoint.Load(dir, precision.ToScalarType())
                    : RandomModel(GptConfig.FromPreset(r.GetValue(model)!), precision);
                if (p + steps > gpt.Config.BlockSize)
                    throw new ArgumentException($"--prompt-tokens {p} + --new-tokens {steps} exceed the block size {gpt.Config.BlockSize}");
                string name = r.GetValue(checkpoint) ?? r.GetValue(model)!;
                foreach (int batch in batchSizes)
                foreach (bool own in kernels)
                {
                    DecodeKernels.Enabled = own;
                    var (prefillSeconds, decodeSeconds, decodeSteps) = MeasureDecode(gpt, batch, p, steps);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {name} | {precision.Name()} | {batch} | {CommandLine.KernelName(own)} | {batch * p / prefillSeconds:F0} | {prefillSeconds * 1000:F0} | {batch * decodeSteps / decodeSeconds:F1} | {decodeSeconds * 1000 / decodeSteps:F1} |"));
                }
            }
            return 0;
        });
        return command;
    }

    private static Command TrainCommand()
    {
        var model = new Option<string>("--model") { Description = "Model size (random weights, random tokens)", DefaultValueFactory = _ => "tiny" };
        model.AcceptOnlyFromAmong([.. GptConfig.PresetNames]);
        var dtype = CommandLine.DtypeOption();
        var blockSize = new Option<int>("--block-size") { Description = "Tokens per block", DefaultValueFactory = _ => 512 };
        var batchSize = new Option<int>("--batch-size") { Description = "Blocks per step", DefaultValueFactory = _ => 8 };
        var steps = new Option<int>("--steps") { Description = "Timed optimizer steps (after one warm-up step)", DefaultValueFactory = _ => 4 };
        var dropout = new Option<double?>("--dropout") { Description = "Dropout during the run (default: the preset's, GPT-2's 0.1; the README's main job trains with 0)" };
        var kernel = CommandLine.KernelOption("Training: own (attention with dropout, dropout, GELU, the output layer's loss, AdamW");
        var rounds = new Option<int>("--rounds") { Description = "Times to repeat the measurement of each kernel, alternating", DefaultValueFactory = _ => 1 };
        var command = new Command("train", "Print training tokens/s and model FLOPs utilisation: (6 x parameters + attention) FLOPs per token x tokens/s over this run's measured GEMM rate")
        {
            model, dtype, blockSize, batchSize, steps, dropout, kernel, rounds,
        };
        command.SetHandler(r =>
        {
            var precision = CommandLine.ResolvePrecision(r.GetValue(dtype)!);
            int B = r.GetValue(batchSize), T = r.GetValue(blockSize), n = r.GetValue(steps);
            var config = GptConfig.FromPreset(r.GetValue(model)!);
            if (r.GetValue(dropout) is { } p)
                config = p is >= 0 and < 1 ? config with { Dropout = p } : throw new ArgumentException($"--dropout {p} must be in [0, 1)");
            if (T > config.BlockSize)
                throw new ArgumentException($"--block-size {T} is longer than the model's {config.BlockSize} positions");
            bool[] kernels = CommandLine.ParseKernels(r.GetValue(kernel)!);
            NativeAllocator.KeepLargeBlocks();
            Console.WriteLine($"threads {get_num_threads()}, native bf16 {(PrecisionSupport.CpuHasNativeBf16 ? "yes" : "no")}, own kernels {Simd.Path}");
            Console.WriteLine("| model | dtype | dropout | kernel | batch x block | tok/s | s/step | GFLOP/token | achieved GFLOP/s | gemm GFLOP/s | MFU |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
            for (int round = 0; round < r.GetValue(rounds); round++)
            foreach (bool own in kernels)
            {
                TrainingKernels.Enabled = own;
                double seconds = MeasureTraining(config, precision, B, T, n);
                // Per token: 6 FLOPs per weight that multiplies (forward 2, backward 4), so not the position table,
                // plus attention's QK^T and AV, 12 x layers x width x context (Kaplan et al. 2020; nanoGPT's estimate).
                double flopsPerToken = 6.0 * (config.ParameterCount - (long)config.BlockSize * config.Embedding) + 12.0 * config.Layers * config.Embedding * T;
                double tokensPerSecond = (double)n * B * T / seconds;
                double achieved = flopsPerToken * tokensPerSecond / 1e9;
                double gemm = MeasureGemm(2048, precision.ToScalarType(), 2.0);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {r.GetValue(model)} | {precision.Name()} | {config.Dropout} | {CommandLine.KernelName(own)} | {B} x {T} | {tokensPerSecond:N0} | {seconds / n:F2} | {flopsPerToken / 1e9:F3} | {achieved:F1} | {gemm:F1} | {achieved / gemm:P0} |"));
            }
            TrainingKernels.Enabled = true;
            return 0;
        });
        return command;
    }

    /// <summary>Seconds for <paramref name="steps"/> optimizer steps on random tokens, after one warm-up step.</summary>
    private static double MeasureTraining(GptConfig config, Precision precision, int B, int T, int steps)
    {
        manual_seed(1);
        using var gpt = new Gpt(config);
        gpt.InitializeWeights(1);
        var masters = gpt.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter.detach().clone());
        if (precision != Precision.Fp32)
            gpt.to(precision.ToScalarType());
        var lm = new CausalLanguageModel(gpt);
        lm.SetTraining(true);
        using var optimizer = new AdamW(lm.NamedParameters, weightDecay: 0.01, precision == Precision.Fp32 ? null : masters);

        void Step()
        {
            using var blocks = randint(0, 50257, [B, T]);
            lm.ForwardBackward(blocks, 1.0);
            optimizer.ClipGradNorm(1.0);
            optimizer.Step(1e-4);
            optimizer.ZeroGrad();
        }
        Step(); // warm-up: first-touch allocation of weights, moments and activations
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) Step();
        double seconds = sw.Elapsed.TotalSeconds;
        foreach (var master in masters.Values) master.Dispose();
        return seconds;
    }

    /// <summary>The --model option of the benchmarks that build GPT-2 small (by default) with random weights.</summary>
    private static Option<string> RandomModelOption()
    {
        var model = new Option<string>("--model") { Description = "Model size to build with random weights", DefaultValueFactory = _ => "small" };
        model.AcceptOnlyFromAmong([.. GptConfig.PresetNames]);
        return model;
    }

    private static Gpt RandomModel(GptConfig config, Precision precision)
    {
        var gpt = new Gpt(config);
        gpt.InitializeWeights(seed: 1);
        gpt.eval();
        if (precision != Precision.Fp32)
            gpt.to(precision.ToScalarType());
        return gpt;
    }

    /// <summary>Times the prefill (first step: the prompt forward plus the first sample) and the decode steps after it.</summary>
    private static (double Prefill, double Decode, int DecodeSteps) MeasureDecode(Gpt gpt, int batch, int promptLength, int newTokens)
    {
        var random = new Random(batch);
        var prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, promptLength).Select(_ => random.Next(50000)).ToArray()).ToArray();
        // Sampling included, as a server would run it; the end-of-text token is made impossible by letting every
        // sequence run to max tokens regardless (random weights rarely pick it anyway).
        var samplers = Enumerable.Range(0, batch).Select(i => new TokenSampler(new SamplingSettings { TopP = 0.9, MaxNewTokens = newTokens + 1, Seed = i })).ToArray();
        var generator = new TextGenerator(gpt);

        TokenSampler.WarmUp();
        // One short warm-up run of the same shapes, so one-time allocation, thread start-up and libtorch's first call
        // at each shape are not billed to the prefill (nor to whichever kernel runs first in a side-by-side run).
        foreach (var _ in generator.GenerateBatch(prompts, prompts.Select((_, i) => new TokenSampler(new SamplingSettings { MaxNewTokens = 2, Seed = i })).ToArray())) { }

        var sw = Stopwatch.StartNew();
        double prefill = 0;
        int stepCount = 0;
        foreach (var _ in generator.GenerateBatch(prompts, samplers))
        {
            if (stepCount++ == 0)
            {
                prefill = sw.Elapsed.TotalSeconds;
                sw.Restart();
            }
        }
        double decode = sw.Elapsed.TotalSeconds;
        return (prefill, decode, stepCount - 1);
    }
}
