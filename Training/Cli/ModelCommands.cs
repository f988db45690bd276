using System.CommandLine;
using System.Globalization;
using System.Text;
using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Cli;

/// <summary>init, publish, logits and generate.</summary>
internal static class ModelCommands
{
    public static void AddTo(RootCommand root)
    {
        root.Subcommands.Add(InitCommand());
        root.Subcommands.Add(PublishCommand());
        root.Subcommands.Add(LogitsCommand());
        root.Subcommands.Add(GenerateCommand());
    }

    private static Option<string> CheckpointOption() => new("--checkpoint")
    {
        Description = "A checkpoint directory (config.json + model.safetensors), ours or a Hugging Face GPT-2 download",
        Required = true,
    };

    private static Command InitCommand()
    {
        var model = new Option<string>("--model") { Description = $"Model size: {string.Join(", ", GptConfig.PresetNames)}", Required = true };
        model.AcceptOnlyFromAmong([.. GptConfig.PresetNames]);
        var output = new Option<string>("--out") { Description = "Directory to write the checkpoint to", Required = true };
        var seed = new Option<long>("--seed") { Description = "Seed of the random initialisation", DefaultValueFactory = _ => 1337 };
        var force = new Option<bool>("--force") { Description = "Replace an existing checkpoint in --out" };
        var command = new Command("init", "Write a randomly initialised (untrained) GPT-2 checkpoint") { model, output, seed, force };
        command.SetHandler(r =>
        {
            string outDir = r.GetValue(output)!;
            if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any() && !r.GetValue(force))
                throw new IOException($"{outDir} already exists and is not empty; pass --force to replace it");
            var config = GptConfig.FromPreset(r.GetValue(model)!);
            long seedValue = r.GetValue(seed);
            using var gpt = new Gpt(config);
            gpt.InitializeWeights(seedValue);
            var provenance = new ModelProvenance("untrained", $"random initialisation ({r.GetValue(model)}, seed {seedValue}); not trained");
            Gpt2Checkpoint.Save(gpt, outDir, provenance);
            Console.WriteLine($"Wrote {outDir}: {r.GetValue(model)} ({CommandLine.Thousands(config.ParameterCount)} parameters, " +
                $"{config.Layers} layers, {config.Heads} heads, {config.Embedding} wide, block size {config.BlockSize}, vocabulary {config.VocabSize}), untrained.");
            return 0;
        });
        return command;
    }

    /// <summary>Puts a checkpoint (or a training run's) into a cluster's checkpoint store as a version; an operator then
    /// promotes it (Client -- ops promote SIZE VERSION).</summary>
    private static Command PublishCommand()
    {
        var checkpoint = CheckpointOption();
        var store = new Option<string>("--store") { Description = "The cluster's checkpoint store (ModelHost:StoreDirectory)", Required = true };
        var size = new Option<string>("--size") { Description = "The size it serves as: tiny, small, ...", Required = true };
        var parent = new Option<string?>("--parent") { Description = "The version it was fine-tuned from, if any" };
        var data = new Option<string?>("--data") { Description = "The prepared data it was trained on, if any" };
        var command = new Command("publish", "Copy a checkpoint into a checkpoint store as a version (content hash), checking it as it copies; prints the version")
        {
            checkpoint, store, size, parent, data,
        };
        command.SetHandler(r =>
        {
            var manifest = new CheckpointStore(r.GetValue(store)!).Publish(r.GetValue(size)!, r.GetValue(checkpoint)!,
                new CheckpointOrigin(r.GetValue(parent), r.GetValue(data) is { } d ? Path.GetFullPath(d) : null));
            Console.WriteLine(manifest.Version);
            return 0;
        });
        return command;
    }

    private static Command LogitsCommand()
    {
        var checkpoint = CheckpointOption();
        var text = new Option<string>("--text") { Description = "Text to encode as the input" };
        var tokens = new Option<string>("--tokens") { Description = "Input token ids, e.g. 464,3290" };
        var top = new Option<int>("--top") { Description = "How many of the most likely next tokens to print", DefaultValueFactory = _ => 5 };
        var dtype = CommandLine.DtypeOption();
        var command = new Command("logits", "Print the most likely next tokens after the input: id<TAB>logit<TAB>token text, best first") { checkpoint, text, tokens, top, dtype };
        command.Validators.Add(r =>
        {
            if ((r.GetValue(text) is null) == (r.GetValue(tokens) is null))
                r.AddError("Give exactly one of --text or --tokens");
        });
        command.SetHandler(r =>
        {
            var tokenizer = Gpt2Tokenizer.Shared;
            int[] input = r.GetValue(text) is { } t ? tokenizer.Encode(t) : TextCommands.ParseTokenIds(r.GetValue(tokens)!);
            if (input.Length == 0)
                throw new ArgumentException("The input is empty");
            var precision = CommandLine.ResolvePrecision(r.GetValue(dtype)!);
            using var model = Gpt2Checkpoint.Load(r.GetValue(checkpoint)!, precision.ToScalarType());
            if (input.Length > model.Config.BlockSize)
                throw new ArgumentException($"The input has {input.Length} tokens; the model's block size is {model.Config.BlockSize}");
            if (input.Max() >= model.Config.VocabSize)
                throw new ArgumentException($"Token id {input.Max()} is outside the checkpoint's vocabulary of {model.Config.VocabSize}");
            int k = Math.Clamp(r.GetValue(top), 1, model.Config.VocabSize);

            using var noGrad = no_grad();
            using var idx = tensor(input.Select(i => (long)i).ToArray(), [1L, input.Length]);
            using var logits = model.NextTokenLogits(idx); // (1, V)
            var (values, ids) = logits[0].topk(k);
            using (values)
            using (ids)
            {
                for (int i = 0; i < k; i++)
                {
                    int id = (int)ids[i].item<long>();
                    string shown = id < Gpt2Tokenizer.VocabSize ? Escape(tokenizer.Decode([id])) : "";
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{id}\t{values[i].item<float>():F6}\t{shown}"));
                }
            }
            return 0;
        });
        return command;
    }

    private static Command GenerateCommand()
    {
        var checkpoint = CheckpointOption();
        var category = new Option<string>("--category") { Description = "arXiv category: AI, LG, CL or CV", Required = true };
        var title = new Option<string>("--title") { Description = "The paper title to write an abstract for", Required = true };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling: keep the smallest set of tokens with probability >= p (1 = off)", DefaultValueFactory = _ => 0.9 };
        var topK = new Option<int>("--top-k") { Description = "Keep only the k most likely tokens (0 = off)", DefaultValueFactory = _ => 0 };
        var temperature = new Option<double>("--temperature") { Description = "Divide logits by this (0 = greedy)", DefaultValueFactory = _ => 1.0 };
        var penalty = new Option<double>("--repetition-penalty") { Description = "Penalise tokens already seen (1 = off)", DefaultValueFactory = _ => 1.0 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 256 };
        var seed = new Option<long?>("--seed") { Description = "Seed for reproducible sampling (default: random, printed)" };
        var dtype = CommandLine.DtypeOption();
        var command = new Command("generate", "Write an abstract for a title: prompt '<|CAT|> Title <|sep|>', nucleus sampling, stop at <|endoftext|>")
        {
            checkpoint, category, title, topP, topK, temperature, penalty, maxTokens, seed, dtype,
        };
        command.SetHandler(r =>
        {
            var settings = new SamplingSettings
            {
                TopP = r.GetValue(topP),
                TopK = r.GetValue(topK),
                Temperature = r.GetValue(temperature),
                RepetitionPenalty = r.GetValue(penalty),
                MaxNewTokens = r.GetValue(maxTokens),
                Seed = r.GetValue(seed),
            }.Validate();
            var tokenizer = Gpt2Tokenizer.Shared;
            int[] prompt = PaperFormat.EncodePrompt(tokenizer, PaperFormat.ParseCategory(r.GetValue(category)!), r.GetValue(title)!);
            string dir = r.GetValue(checkpoint)!;
            var precision = CommandLine.ResolvePrecision(r.GetValue(dtype)!, decoding: true);
            using var model = Gpt2Checkpoint.Load(dir, precision.ToScalarType(), minVocabSize: Gpt2Tokenizer.VocabSize);
            var provenance = Gpt2Checkpoint.ReadProvenance(dir);
            if (provenance.Kind == "untrained")
                Console.Error.WriteLine($"note: {dir} is untrained ({provenance.Description}); expect gibberish");

            var sampler = new TokenSampler(settings, prompt);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"seed {sampler.Seed}, top-p {settings.TopP}, top-k {settings.TopK}, temperature {settings.Temperature}, {precision.Name()}, prompt {prompt.Length} tokens"));
            var decoder = tokenizer.NewStreamingDecoder();
            var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false)) { AutoFlush = true };
            foreach (int token in new TextGenerator(model).Generate(prompt, sampler))
                stdout.Write(decoder.Push(token));
            stdout.WriteLine(decoder.Flush());
            return 0;
        });
        return command;
    }

    /// <summary>Shows control characters and newlines visibly so one token stays on one line.</summary>
    private static string Escape(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            sb.Append(c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\\' => "\\\\",
                _ when char.IsControl(c) => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }
        return sb.ToString();
    }
}
