using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Grains;

/// <summary>Where a silo finds checkpoints and how it serves them (appsettings section "ModelHost").</summary>
public sealed class ModelHostOptions
{
    /// <summary>Directory holding one checkpoint (or training run) directory per size: tiny/, small/, ...</summary>
    public string CheckpointDirectory { get; set; } = "checkpoints";

    /// <summary>Requests decoding at once per model.</summary>
    public int Slots { get; set; } = 8;

    /// <summary>Requests waiting per model before callers get a busy error.</summary>
    public int MaxQueue { get; set; } = 64;

    public int MaxPromptTokens { get; set; } = 256;
    public int MaxNewTokens { get; set; } = 512;

    /// <summary>fp32 or bf16 (bf16 falls back to fp32 on CPUs without native bf16).</summary>
    public string Precision { get; set; } = "bf16";
}

/// <summary>
/// The silo's models: loads each checkpoint once, on first use, and owns its continuous-batching engine (and
/// so the decode thread and the weights) until the silo stops. Model grains are façades over it.
/// </summary>
public sealed class ModelHost(IOptions<ModelHostOptions> options) : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<Served>> _models = new(StringComparer.Ordinal);

    /// <summary>Sizes with a checkpoint (or training run) under the checkpoint directory, e.g. ["tiny", "small"].</summary>
    public IReadOnlyList<string> AvailableSizes()
    {
        string root = options.Value.CheckpointDirectory;
        if (!Directory.Exists(root))
            return [];
        return [.. Directory.EnumerateDirectories(root)
            .Where(d => Gpt2Checkpoint.Exists(Gpt2Checkpoint.Resolve(d)))
            .Select(d => Path.GetFileName(d)!)
            .Order(StringComparer.Ordinal)];
    }

    /// <summary>Models loaded so far (a silo is healthy once it serves at least one).</summary>
    public IReadOnlyList<ModelInfo> Loaded =>
        [.. _models.Values.Where(l => l.IsValueCreated && !l.Value.Engine.IsDisposed).Select(l => l.Value.Info)];

    /// <summary>Where checkpoints are looked for.</summary>
    public string CheckpointDirectory => Path.GetFullPath(options.Value.CheckpointDirectory);

    /// <summary>The engine and description for a "size@device" key, loading the checkpoint on first use.</summary>
    public (ContinuousBatcher Engine, ModelInfo Info) Get(string key)
    {
        var (size, device) = ParseKey(key);
        var served = _models.GetOrAdd(key, _ => new Lazy<Served>(() => Load(key, size, device))).Value;
        return (served.Engine, served.Info);
    }

    /// <summary>
    /// Hot swap: loads the checkpoint for <paramref name="key"/> again from disk and routes new requests to it at
    /// once. Requests already running finish on the old weights; the old engine and model are released once idle.
    /// Loading takes seconds for large models, so callers run this off any grain turn.
    /// </summary>
    public ModelInfo Reload(string key)
    {
        var (size, device) = ParseKey(key);
        var fresh = Load(key, size, device);
        Lazy<Served>? previous = null;
        _models.AddOrUpdate(key, _ => new Lazy<Served>(fresh), (_, existing) =>
        {
            previous = existing;
            return new Lazy<Served>(fresh);
        });
        if (previous is { IsValueCreated: true } old)
            _ = RetireWhenIdleAsync(old.Value);
        return fresh.Info;
    }

    private static async Task RetireWhenIdleAsync(Served old)
    {
        while (old.Engine.Running > 0 || old.Engine.Queued > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(100)).ConfigureAwait(false);
        old.Engine.Dispose();
        old.Model.Dispose();
    }

    /// <summary>Splits "size@device"; only CPU devices exist in this build (no CUDA libtorch is packaged).</summary>
    public static (string Size, string Device) ParseKey(string key)
    {
        int at = key.IndexOf('@', StringComparison.Ordinal);
        if (at <= 0 || at == key.Length - 1)
            throw new ArgumentException($"Model grain key '{key}' is not of the form size@device (e.g. small@cpu:0)");
        string size = key[..at], device = key[(at + 1)..];
        if (device is not ("cpu" or "cpu:0"))
            throw new ArgumentException($"Device '{device}' is not available on this silo: this build runs libtorch on the CPU only (cpu:0)");
        return (size, device);
    }

    private Served Load(string key, string size, string device)
    {
        var o = options.Value;
        string directory = Path.Combine(o.CheckpointDirectory, size);
        if (!Gpt2Checkpoint.Exists(Gpt2Checkpoint.Resolve(directory)))
            throw new ArgumentException($"No checkpoint for '{size}' in {Path.GetFullPath(o.CheckpointDirectory)}. Train one " +
                $"(dotnet run --project Training -- train ... --out {directory}) or copy a Hugging Face GPT-2 directory there.");
        var (precision, _) = PrecisionSupport.Resolve(PrecisionSupport.Parse(o.Precision), TorchSharp.torch.CPU);
        var model = Gpt2Checkpoint.Load(directory, precision.ToScalarType(), minVocabSize: Gpt2Tokenizer.VocabSize);
        var provenance = Gpt2Checkpoint.ReadProvenance(directory);
        var engine = new ContinuousBatcher(model, new BatcherOptions
        {
            Slots = o.Slots,
            MaxQueue = o.MaxQueue,
            MaxPromptTokens = Math.Min(o.MaxPromptTokens, model.Config.BlockSize - 1),
            MaxNewTokens = o.MaxNewTokens,
            Name = key,
        });
        var info = new ModelInfo(key, size, device, Path.GetFullPath(Gpt2Checkpoint.Resolve(directory)), $"{provenance.Kind}: {provenance.Description}", model.Config.ParameterCount);
        return new Served(model, engine, info);
    }

    public void Dispose()
    {
        foreach (var lazy in _models.Values.Where(l => l.IsValueCreated))
        {
            lazy.Value.Engine.Dispose();
            lazy.Value.Model.Dispose();
        }
    }

    private sealed record Served(Gpt Model, ContinuousBatcher Engine, ModelInfo Info);
}
