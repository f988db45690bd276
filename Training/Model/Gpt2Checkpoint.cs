// A checkpoint directory is a Hugging Face model directory, so checkpoints move freely between this project
// and transformers:
//   config.json          GPT2Config fields (n_layer, n_head, n_embd, n_positions, vocab_size, ...)
//   model.safetensors    GPT2LMHeadModel's state dict: "transformer." + our module names; lm_head.weight is
//                        left out because it is tied to transformer.wte.weight (as save_pretrained does)
//   provenance.json      ours: how the weights were made (Hugging Face ignores it)
using System.Text.Json;
using System.Text.Json.Nodes;
using OrleansGpt.Training.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Model;

/// <summary>How a checkpoint's weights came to be, so nobody mistakes random weights for a trained model.</summary>
/// <param name="Kind">"untrained", "trained-from-scratch", "fine-tuned" or "unknown" (a directory from elsewhere).</param>
/// <param name="Description">One line for people, e.g. "random initialisation (seed 7)".</param>
/// <param name="TrainedTokens">Tokens seen in training by this project, if any.</param>
/// <param name="BaseModel">What fine-tuning started from, if anything.</param>
public sealed record ModelProvenance(string Kind, string Description, long TrainedTokens = 0, string? BaseModel = null)
{
    /// <summary>Provenance of a directory that did not record any (e.g. a Hugging Face download).</summary>
    public static ModelProvenance Unknown { get; } = new("unknown", "no provenance.json: made outside this project (e.g. a Hugging Face download)");
}

/// <summary>Loads and saves GPT-2 checkpoints in Hugging Face's directory layout.</summary>
public static class Gpt2Checkpoint
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";
    public const string ProvenanceFile = "provenance.json";
    private const string HfPrefix = "transformer.";

    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>True when <paramref name="directory"/> holds a config.json and model.safetensors.</summary>
    public static bool Exists(string directory) =>
        File.Exists(Path.Combine(directory, ConfigFile)) && File.Exists(Path.Combine(directory, WeightsFile));

    /// <summary>Reads config.json into a <see cref="GptConfig"/>, refusing GPT-2 variants this model does not implement.</summary>
    public static GptConfig ReadConfig(string directory)
    {
        string path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{directory} is not a checkpoint directory: it has no {ConfigFile}", path);
        JsonObject json;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new InvalidDataException($"{path} is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e);
        }

        string? modelType = json["model_type"]?.GetValue<string>();
        if (modelType is not null && modelType != "gpt2")
            throw new InvalidDataException($"{path}: model_type is '{modelType}', expected 'gpt2'");
        string activation = json["activation_function"]?.GetValue<string>() ?? "gelu_new";
        if (activation is not ("gelu_new" or "gelu_pytorch_tanh"))
            throw new InvalidDataException($"{path}: activation_function '{activation}' is not supported (GPT-2 uses gelu_new)");
        if (json["scale_attn_by_inverse_layer_idx"]?.GetValue<bool>() == true)
            throw new InvalidDataException($"{path}: scale_attn_by_inverse_layer_idx is not supported");

        int Required(string name) => json[name]?.GetValue<int>() ?? throw new InvalidDataException($"{path}: missing {name}");
        int embedding = Required("n_embd");
        int? inner = json["n_inner"]?.GetValue<int>();
        if (inner is not null && inner != 4 * embedding)
            throw new InvalidDataException($"{path}: n_inner {inner} is not supported (only 4 * n_embd = {4 * embedding})");

        var config = new GptConfig
        {
            VocabSize = Required("vocab_size"),
            BlockSize = json["n_positions"]?.GetValue<int>() ?? json["n_ctx"]?.GetValue<int>() ?? throw new InvalidDataException($"{path}: missing n_positions"),
            Layers = Required("n_layer"),
            Heads = Required("n_head"),
            Embedding = embedding,
            LayerNormEpsilon = json["layer_norm_epsilon"]?.GetValue<double>() ?? 1e-5,
            Dropout = json["resid_pdrop"]?.GetValue<double>() ?? 0.1,
        };
        try
        {
            return config.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>Reads provenance.json, or <see cref="ModelProvenance.Unknown"/> when there is none.</summary>
    public static ModelProvenance ReadProvenance(string directory)
    {
        directory = Resolve(directory);
        string path = Path.Combine(directory, ProvenanceFile);
        return File.Exists(path)
            ? JsonSerializer.Deserialize<ModelProvenance>(File.ReadAllText(path), s_json) ?? ModelProvenance.Unknown
            : ModelProvenance.Unknown;
    }

    /// <summary>
    /// Loads a checkpoint directory onto <paramref name="device"/> in <paramref name="dtype"/>.
    /// </summary>
    /// <param name="minVocabSize">
    /// When the file's vocabulary is smaller (Hugging Face's gpt2 has 50257 tokens, our tokenizer 50258 with
    /// &lt;|sep|&gt;), the embedding grows and each new row is the mean of the existing rows: a token that starts
    /// out "average" perturbs the pretrained model least until fine-tuning gives it a meaning.
    /// </param>
    public static Gpt Load(string directory, ScalarType dtype = ScalarType.Float32, Device? device = null, int minVocabSize = 0)
    {
        directory = Resolve(directory);
        var fileConfig = ReadConfig(directory);
        var config = fileConfig.VocabSize < minVocabSize ? fileConfig with { VocabSize = minVocabSize } : fileConfig;
        var model = new Gpt(config);
        try
        {
            LoadWeights(model, Path.Combine(directory, WeightsFile), fileConfig.VocabSize);
            model.eval();
            if (dtype != ScalarType.Float32)
                model.to(dtype);
            if (device is not null && device.type != DeviceType.CPU)
                model.to(device);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies the tensors of a GPT2LMHeadModel or GPT2Model safetensors file into <paramref name="model"/>.
    /// Keys may carry the "transformer." prefix or not; attn.bias / attn.masked_bias (old causal-mask buffers)
    /// and the tied lm_head.weight are skipped. Anything missing, unexpected or of the wrong shape fails with
    /// the key and both shapes.
    /// </summary>
    public static void LoadWeights(Gpt model, string path, int fileVocabSize)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"No weights file {path}", path);
        using var reader = new SafeTensorsReader(path);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var found = new Dictionary<string, SafeTensorEntry>(StringComparer.Ordinal);
        foreach (var entry in reader.Entries.Values.OrderBy(e => e.Begin))
        {
            string name = entry.Name.StartsWith(HfPrefix, StringComparison.Ordinal) ? entry.Name[HfPrefix.Length..] : entry.Name;
            if (name is "lm_head.weight" || name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal))
                continue;
            if (!parameters.ContainsKey(name))
                throw new InvalidDataException($"{path}: unexpected tensor {entry.Name} {entry.ShapeText}; it is not part of a GPT-2 model with n_layer={model.Config.Layers}");
            if (!found.TryAdd(name, entry))
                throw new InvalidDataException($"{path}: {name} appears twice (as {found[name].Name} and {entry.Name})");
        }

        // Check every key and shape before copying anything, so a bad file leaves the model untouched.
        foreach (var (name, parameter) in parameters)
        {
            long[] expected = parameter.shape;
            if (name == "wte.weight")
                expected = [fileVocabSize, expected[1]];
            string expectedText = $"[{string.Join(", ", expected)}]";
            if (!found.TryGetValue(name, out var entry))
                throw new InvalidDataException($"{path}: missing {HfPrefix}{name} (the model expects {expectedText})");
            if (!entry.Shape.SequenceEqual(expected))
                throw new InvalidDataException($"{path}: {entry.Name} has shape {entry.ShapeText}, the model expects {expectedText}");
        }

        using var _ = no_grad();
        model.InvalidateDerivedWeights();
        foreach (var (name, parameter) in parameters)
        {
            using var source = reader.Read(found[name]);
            if (name == "wte.weight" && parameter.shape[0] > fileVocabSize)
            {
                parameter.narrow(0, 0, fileVocabSize).copy_(source);
                using var mean = source.to(ScalarType.Float32).mean([0L], keepdim: true); // (1, C)
                parameter.narrow(0, fileVocabSize, parameter.shape[0] - fileVocabSize).copy_(mean);
            }
            else
            {
                parameter.copy_(source);
            }
        }
    }

    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="directory"/> as config.json + model.safetensors +
    /// provenance.json, replacing any previous checkpoint there atomically.
    /// </summary>
    public static void Save(Gpt model, string directory, ModelProvenance provenance) =>
        AtomicWrite.Directory(directory, staging => WriteFiles(model, staging, provenance));

    /// <summary>Writes the checkpoint's files into a directory being assembled (e.g. a training checkpoint's
    /// staging directory, which adds optimizer state beside them).</summary>
    public static void WriteFiles(Gpt model, string directory, ModelProvenance provenance) =>
        WriteFiles(model.Config, model.Dtype, model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)), directory, provenance);

    /// <summary>Writes a checkpoint from named weights (our module names), e.g. a trainer's fp32 master weights.</summary>
    public static void WriteFiles(GptConfig config, ScalarType dtype, IEnumerable<(string Name, Tensor Weight)> weights, string directory, ModelProvenance provenance)
    {
        File.WriteAllText(Path.Combine(directory, ConfigFile), ConfigJson(config, dtype).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(directory, ProvenanceFile), JsonSerializer.Serialize(provenance, s_json));
        var tensors = weights.Select(w => (HfPrefix + w.Name, w.Weight));
        SafeTensorsWriter.Write(Path.Combine(directory, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>
    /// The checkpoint directory meant by <paramref name="path"/>: the path itself, or for a training run's
    /// output directory, its <c>checkpoint</c> folder.
    /// </summary>
    public static string Resolve(string path)
    {
        if (!File.Exists(Path.Combine(path, ConfigFile)) && File.Exists(Path.Combine(path, "checkpoint", ConfigFile)))
            return Path.Combine(path, "checkpoint");
        return path;
    }

    /// <summary>Hugging Face's GPT2Config for <paramref name="config"/>.</summary>
    public static JsonObject ConfigJson(GptConfig config, ScalarType dtype)
    {
        string dtypeName = dtype == ScalarType.BFloat16 ? "bfloat16" : "float32";
        return new JsonObject
        {
            ["architectures"] = new JsonArray("GPT2LMHeadModel"),
            ["model_type"] = "gpt2",
            ["vocab_size"] = config.VocabSize,
            ["n_positions"] = config.BlockSize,
            ["n_ctx"] = config.BlockSize,
            ["n_embd"] = config.Embedding,
            ["n_layer"] = config.Layers,
            ["n_head"] = config.Heads,
            ["n_inner"] = null,
            ["activation_function"] = "gelu_new",
            ["layer_norm_epsilon"] = config.LayerNormEpsilon,
            ["resid_pdrop"] = config.Dropout,
            ["embd_pdrop"] = config.Dropout,
            ["attn_pdrop"] = config.Dropout,
            ["initializer_range"] = 0.02,
            ["scale_attn_weights"] = true,
            ["bos_token_id"] = 50256,
            ["eos_token_id"] = 50256,
            ["tie_word_embeddings"] = true,
            ["torch_dtype"] = dtypeName,
            ["dtype"] = dtypeName,
        };
    }
}
