using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Grains.Placement;
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

    /// <summary>This silo's name in model keys ("size@node/device"); empty: the machine name. Two silos on one
    /// machine need different names.</summary>
    public string? Node { get; set; }

    /// <summary>The devices this silo owns: cpu:0, cuda:0, cuda:1, ...; empty: cpu:0.</summary>
    public List<string> Devices { get; set; } = [];

    /// <summary>Let several models share one device. Off, each device serves at most one model grain.</summary>
    public bool ShareDevices { get; set; }

    /// <summary>Replicas this silo hosts, "size@device" (e.g. small@cuda:0, small@cuda:1); empty: every checkpoint
    /// found in <see cref="CheckpointDirectory"/> at start, on the first device.</summary>
    public List<string> Replicas { get; set; } = [];
}

/// <summary>
/// The silo's models: loads each checkpoint once, on first use, and owns its continuous-batching engine (and
/// so the decode thread and the weights) until the silo stops. Model grains are façades over it. Keys are
/// resolved against the silo's <see cref="DeviceInventory"/>: "small@cpu:0" and "small@node/cpu:0" are the same
/// model here, and a device serves one model unless the inventory allows sharing.
/// </summary>
public sealed class ModelHost(IOptions<ModelHostOptions> options, DeviceInventory inventory) : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<Served>> _models = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _deviceOwners = new(StringComparer.Ordinal);

    /// <summary>What this silo owns and serves.</summary>
    public DeviceInventory Inventory => inventory;

    /// <summary>Sizes with a checkpoint (or training run) under the checkpoint directory now, e.g. ["tiny", "small"].</summary>
    public IReadOnlyList<string> AvailableSizes() => CheckpointStore.Sizes(options.Value.CheckpointDirectory);

    /// <summary>Models loaded so far (a silo is healthy once it serves at least one).</summary>
    public IReadOnlyList<ModelInfo> Loaded =>
        [.. _models.Values.Where(l => l.IsValueCreated && !l.Value.Engine.IsDisposed).Select(l => l.Value.Info)];

    /// <summary>Where checkpoints are looked for.</summary>
    public string CheckpointDirectory => Path.GetFullPath(options.Value.CheckpointDirectory);

    /// <summary>The engine and description for a model key, loading the checkpoint on first use.</summary>
    public (ContinuousBatcher Engine, ModelInfo Info) Get(string key)
    {
        var model = Resolve(key);
        var lazy = _models.GetOrAdd(model.ToString(), _ => new Lazy<Served>(() => Load(Claim(model))));
        try
        {
            return (lazy.Value.Engine, lazy.Value.Info);
        }
        catch
        {
            // A failed load (no checkpoint yet, a bad file) is not remembered, and leaves the device free: the next
            // request tries again.
            if (_models.TryRemove(new KeyValuePair<string, Lazy<Served>>(model.ToString(), lazy)))
                lock (_deviceOwners)
                    if (_deviceOwners.GetValueOrDefault(model.Device) == model.ToString())
                        _deviceOwners.Remove(model.Device);
            throw;
        }
    }

    /// <summary>The full key ("size@node/device") of <paramref name="key"/> on this silo; ArgumentException when
    /// this silo does not own the device it names.</summary>
    public ModelKey Resolve(string key)
    {
        var model = ModelKey.Parse(key);
        if (!inventory.Owns(model))
            throw new ArgumentException($"Model key '{key}' names a device this silo ({inventory.Node}: {string.Join(", ", inventory.Devices)}) does not own");
        return model.On(inventory.Node);
    }

    /// <summary>
    /// Hot swap: loads the checkpoint for <paramref name="key"/> again from disk and routes new requests to it at
    /// once. Requests already running finish on the old weights; the old engine and model are released once idle.
    /// Loading takes seconds for large models, so callers run this off any grain turn.
    /// </summary>
    public ModelInfo Reload(string key)
    {
        var model = Resolve(key);
        var fresh = Load(Claim(model));
        Lazy<Served>? previous = null;
        _models.AddOrUpdate(model.ToString(), _ => new Lazy<Served>(fresh), (_, existing) =>
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

    /// <summary>
    /// Reserves the key's device for it. Unless the inventory allows sharing, a device another model already uses
    /// is refused with a message naming that model: two models on one GPU would fight over its memory.
    /// </summary>
    private ModelKey Claim(ModelKey model)
    {
        lock (_deviceOwners)
        {
            string key = model.ToString();
            if (!inventory.ShareDevices && _deviceOwners.TryGetValue(model.Device, out var owner) && owner != key)
                throw new InvalidOperationException($"{inventory.Node}/{model.Device} already serves {owner}; a device serves one model " +
                    "unless ModelHost:ShareDevices is true");
            _deviceOwners[model.Device] = key;
            return model;
        }
    }

    private Served Load(ModelKey key)
    {
        var o = options.Value;
        string size = key.Size;
        string directory = CheckpointStore.SizeDirectory(o.CheckpointDirectory, size);
        if (!Gpt2Checkpoint.Exists(Gpt2Checkpoint.Resolve(directory)))
            throw new ArgumentException($"No checkpoint for '{size}' in {Path.GetFullPath(o.CheckpointDirectory)}. Train one " +
                $"(dotnet run --project Training -- train ... --out {directory}) or copy a Hugging Face GPT-2 directory there.");
        var device = TorchDevice(key.Device);
        var (precision, _) = PrecisionSupport.Resolve(PrecisionSupport.Parse(o.Precision), device);
        var model = Gpt2Checkpoint.Load(directory, precision.ToScalarType(), device, minVocabSize: Gpt2Tokenizer.VocabSize);
        var provenance = Gpt2Checkpoint.ReadProvenance(directory);
        var limits = new BatcherOptions
        {
            Slots = o.Slots,
            MaxQueue = o.MaxQueue,
            MaxPromptTokens = Math.Min(o.MaxPromptTokens, model.Config.BlockSize - 1),
            MaxNewTokens = o.MaxNewTokens,
            Name = key.ToString(),
        };
        var engine = new ContinuousBatcher(model, limits);
        var info = new ModelInfo(key.ToString(), size, key.Device, Path.GetFullPath(Gpt2Checkpoint.Resolve(directory)),
            $"{provenance.Kind}: {provenance.Description}", model.Config.ParameterCount, inventory.Node, Silo: "", limits.MaxPromptTokens, limits.MaxNewTokens);
        return new Served(model, engine, info);
    }

    /// <summary>
    /// libtorch's device for an inventory device. cpu:N are logical CPU devices (they share the machine's cores and
    /// let one machine host several exclusive CPU replicas); cuda:N needs a CUDA build of libtorch, which this
    /// project's CPU-only package is not.
    /// </summary>
    private static TorchSharp.torch.Device TorchDevice(string device)
    {
        if (device.StartsWith("cpu", StringComparison.Ordinal))
            return TorchSharp.torch.CPU;
        if (!TorchSharp.torch.cuda.is_available())
            throw new InvalidOperationException($"{device} is in this silo's ModelHost:Devices, but libtorch here has no CUDA support " +
                "(only libtorch-cpu is packaged); serve from cpu:N or install a CUDA build of TorchSharp");
        return new TorchSharp.torch.Device(device);
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
