using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Grains.Placement;
using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
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

    /// <summary>Who runs decode steps: "own" (SmallBatchMatMul for products of up to 24 rows, both cores streaming the
    /// weights, and DecodeAttention over a KV cache kept in the model's dtype; at the widest vectors the CPU has: AVX-512, AVX2 or SSE/NEON) or
    /// "torch" (libtorch for all of it, the cache in fp32). Process-wide: the last silo started in a process decides.</summary>
    public string DecodeKernel { get; set; } = "own";

    /// <summary>This silo's name in model keys ("size@node/device"); empty: the machine name. Two silos on one
    /// machine need different names.</summary>
    public string? Node { get; set; }

    /// <summary>The devices this silo owns: cpu:0, cuda:0, cuda:1, ...; empty: cpu:0.</summary>
    public List<string> Devices { get; set; } = [];

    /// <summary>Let several models share one device. Off, each device serves at most one model grain.</summary>
    public bool ShareDevices { get; set; }

    /// <summary>Replicas this silo hosts, "size@device" (e.g. small@cuda:0, small@cuda:1); empty: every size found in
    /// <see cref="CheckpointDirectory"/> or the checkpoint store at start, on the first device.</summary>
    public List<string> Replicas { get; set; } = [];

    /// <summary>The versioned checkpoint store every silo reads: a shared directory (NFS, a mounted volume) when
    /// silos run on several machines. Empty: CheckpointDirectory/.store, which suits one machine.</summary>
    public string StoreDirectory { get; set; } = "";

    /// <summary>This silo's local copies of store versions, checked against their hashes before loading. Empty:
    /// CheckpointDirectory/.cache/NODE.</summary>
    public string CacheDirectory { get; set; } = "";

    /// <summary>Devices of this silo that fine-tuning may use (cpu:0, cuda:1, ...). Empty: this silo does not train;
    /// a fine-tune runs only on a silo that lists a device here, never silently on a serving device.</summary>
    public List<string> TrainingDevices { get; set; } = [];

    /// <summary>The only directory fine-tunes read prepared data from: a request's data_directory must lie inside it, and a
    /// relative one is resolved against it (not against wherever the silo happened to start). Relative itself to
    /// where the silo started.</summary>
    public string DataDirectory { get; set; } = "data";

    /// <summary>How much the store, the fine-tuning runs and this silo's cache keep (see <see cref="RetentionOptions"/>).</summary>
    public RetentionOptions Retention { get; set; } = new();

    /// <summary>Requests failed by the model in a row (not by their callers) after which a replica counts as failing:
    /// /healthz answers 503 naming it, and routing prefers other replicas of its size. One served request resets it.</summary>
    public int UnhealthyAfterFailures { get; set; } = 3;

    /// <summary>The store directory these options mean.</summary>
    public string ResolvedStoreDirectory => Path.GetFullPath(StoreDirectory.Length > 0 ? StoreDirectory : Path.Combine(CheckpointDirectory, ".store"));
}

/// <summary>What is deleted, and when (ModelHost:Retention). Without limits every fine-tune would leave its run
/// (optimizer state included: ~250 MB for tiny) and every version its weights, until the disk fills.</summary>
public sealed class RetentionOptions
{
    /// <summary>Versions of a size whose weights the store keeps: the active one, then those a rollback would return
    /// to, then the newest. Older versions lose their files but stay in the registry, so lineage stays readable.</summary>
    public int Versions { get; set; } = 10;

    /// <summary>Finished fine-tuning run directories kept per size, newest first (an interrupted run, which can still be
    /// resumed, is never deleted).</summary>
    public int Runs { get; set; } = 3;

    /// <summary>Versions of a size kept in this silo's cache besides the one it serves (a rollback to one of them needs
    /// no copy).</summary>
    public int CachedVersions { get; set; } = 1;
}

/// <summary>
/// The silo's models: for each replica key, the engine serving one checkpoint version, and during a promotion the
/// next version loaded beside it. Versions come from the <see cref="CheckpointStore"/> through this silo's cache,
/// every file checked against its hash before loading. The host owns the engines (decode threads and weights) until
/// the silo stops; model grains are façades over it. Keys are resolved against the silo's
/// <see cref="DeviceInventory"/>: "small@cpu:0" and "small@node/cpu:0" are the same model here, and a device serves
/// one model unless the inventory allows sharing.
/// </summary>
public sealed class ModelHost : IDisposable
{
    private readonly ModelHostOptions _options;
    private readonly DeviceInventory _inventory;
    private readonly ConcurrentDictionary<string, Served> _serving = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Served> _prepared = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _loading = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _deviceOwners = new(StringComparer.Ordinal);

    public ModelHost(IOptions<ModelHostOptions> options, DeviceInventory inventory)
    {
        _options = options.Value;
        _inventory = inventory;
        DecodeKernels.Enabled = _options.DecodeKernel != "torch"; // validated: own or torch
        Store = new CheckpointStore(_options.ResolvedStoreDirectory);
        CacheDirectory = Path.GetFullPath(_options.CacheDirectory.Length > 0 ? _options.CacheDirectory
            : Path.Combine(_options.CheckpointDirectory, ".cache", inventory.Node));
    }

    /// <summary>What this silo owns and serves.</summary>
    public DeviceInventory Inventory => _inventory;

    /// <summary>The versioned checkpoint store.</summary>
    public CheckpointStore Store { get; }

    /// <summary>This silo's verified copies of store versions.</summary>
    public string CacheDirectory { get; }

    /// <summary>The longest prompt, in tokens, this silo's replicas accept at most (ModelHost:MaxPromptTokens).</summary>
    public int MaxPromptTokens => _options.MaxPromptTokens;

    /// <summary>Where an operator's checkpoints are brought in from (one directory per size).</summary>
    public string CheckpointDirectory => Path.GetFullPath(_options.CheckpointDirectory);

    /// <summary>Sizes this silo can serve: those in the checkpoint directory and those in the store, e.g. ["tiny", "small"].</summary>
    public IReadOnlyList<string> AvailableSizes() => Sizes(_options);

    /// <summary>The sizes <paramref name="options"/> can serve (the inventory is built from these before the host exists).</summary>
    public static IReadOnlyList<string> Sizes(ModelHostOptions options) =>
        [.. CheckpointFolder.Sizes(options.CheckpointDirectory).Union(new CheckpointStore(options.ResolvedStoreDirectory).Sizes()).Order(StringComparer.Ordinal)];

    /// <summary>Models being served (a silo is healthy once it serves at least one).</summary>
    public IReadOnlyList<ModelInfo> Loaded => [.. _serving.Values.Where(s => !s.Engine.IsDisposed).Select(s => s.Info)];

    /// <summary>ModelHost:DataDirectory as a full path.</summary>
    public string DataRoot => Path.GetFullPath(_options.DataDirectory);

    /// <summary>What the store, the runs and the cache keep.</summary>
    public RetentionOptions Retention => _options.Retention;

    /// <summary>
    /// The full path of a fine-tune's data_directory: relative ones under <see cref="DataRoot"/>; anything outside it
    /// (an absolute path elsewhere, "..") is refused with ArgumentException naming the setting. A fine-tune reads
    /// whatever it is pointed at, so the operator, not the caller, decides where that may be.
    /// </summary>
    public string ResolveDataDirectory(string dataDirectory)
    {
        string root = DataRoot;
        string full = Path.GetFullPath(dataDirectory, root);
        string relative = Path.GetRelativePath(root, full);
        if (relative == ".." || relative.StartsWith(".." + Path.DirectorySeparatorChar, StringComparison.Ordinal) || Path.IsPathRooted(relative))
            throw new ArgumentException($"data_directory '{dataDirectory}' is outside ModelHost:DataDirectory ({root}); fine-tunes read prepared data " +
                "only from there: give a path relative to it", "DataDirectory");
        return full;
    }

    /// <summary>Whether <paramref name="engine"/> has failed its last ModelHost:UnhealthyAfterFailures requests.</summary>
    public bool IsFailing(ContinuousBatcher engine) => engine.ConsecutiveFailures >= Math.Max(1, _options.UnhealthyAfterFailures);

    /// <summary>Served models whose last requests all failed in the model, with the count and the last reason: what
    /// /healthz reports (a model that loads and then fails everything must not look healthy).</summary>
    public IReadOnlyList<(ModelInfo Info, int ConsecutiveFailures, string? LastFailure)> Failing() =>
        [.. _serving.Values.Where(s => !s.Engine.IsDisposed && IsFailing(s.Engine)).Select(s => (s.Info, s.Engine.ConsecutiveFailures, s.Engine.LastFailure))];

    /// <summary>Copies CheckpointDirectory/SIZE into the store (a no-op when that version is there already).</summary>
    public CheckpointManifest Import(string size)
    {
        string directory = CheckpointFolder.SizeDirectory(_options.CheckpointDirectory, size);
        if (!Gpt2Checkpoint.Exists(Gpt2Checkpoint.Resolve(directory)))
            throw new ArgumentException($"No checkpoint for '{size}' in {CheckpointDirectory}. Train one " +
                $"(dotnet run --project Training -- train ... --out {directory}) or copy a Hugging Face GPT-2 directory there.");
        return Store.Publish(size, directory);
    }

    /// <summary>The engine and description serving a model key; InvalidOperationException when this silo has not
    /// loaded it (its model grain loads it on activation).</summary>
    public (ContinuousBatcher Engine, ModelInfo Info) Get(string key)
    {
        var model = Resolve(key);
        return _serving.TryGetValue(model.ToString(), out var served)
            ? (served.Engine, served.Info)
            : throw new InvalidOperationException($"{model} is not loaded on this silo");
    }

    /// <summary>The full key ("size@node/device") of <paramref name="key"/> on this silo; ArgumentException when
    /// this silo does not own the device it names.</summary>
    public ModelKey Resolve(string key)
    {
        var model = ModelKey.Parse(key);
        if (!_inventory.Owns(model))
            throw new ArgumentException($"Model key '{key}' names a device this silo ({_inventory.Node}: {string.Join(", ", _inventory.Devices)}) does not own");
        return model.On(_inventory.Node);
    }

    /// <summary>
    /// Loads <paramref name="version"/> for <paramref name="key"/> beside what it serves now (first phase of a
    /// promotion). Seconds for large models: callers run it off any grain turn. Throws, changing nothing, when the
    /// version cannot be fetched, verified or loaded.
    /// </summary>
    public ModelInfo Prepare(string key, string version) => WithKey(key, model =>
    {
        if (_serving.TryGetValue(model.ToString(), out var current) && current.Info.Version == version)
            return current.Info;
        if (_prepared.TryGetValue(model.ToString(), out var ready) && ready.Info.Version == version)
            return ready.Info;
        var fresh = Load(Claim(model), version);
        if (_prepared.TryRemove(model.ToString(), out var stale))
            stale.Dispose();
        _prepared[model.ToString()] = fresh;
        return fresh.Info;
    });

    /// <summary>
    /// Serves <paramref name="version"/> for <paramref name="key"/> from the next request on: the prepared engine
    /// if there is one, else it is loaded now. Requests already running finish on the old engine, which is released
    /// once idle; new ones never wait for a load.
    /// </summary>
    public ModelInfo Activate(string key, string version) => WithKey(key, model =>
    {
        string name = model.ToString();
        if (_serving.TryGetValue(name, out var current) && current.Info.Version == version && !current.Engine.IsDisposed)
            return current.Info;
        var fresh = _prepared.TryRemove(name, out var ready) && ready.Info.Version == version ? ready : null;
        if (fresh is null)
        {
            ready?.Dispose();
            fresh = Load(Claim(model), version);
        }
        _serving[name] = fresh;
        if (current is not null)
            _ = RetireWhenIdleAsync(current);
        PruneCache(model.Size);
        return fresh.Info;
    });

    /// <summary>
    /// Deletes this silo's cached copies of <paramref name="size"/> beyond ModelHost:Retention:CachedVersions, oldest
    /// first, never one a replica serves or has prepared. Best effort: a copy that cannot be deleted now is retried
    /// at the next activation.
    /// </summary>
    private void PruneCache(string size)
    {
        string directory = Path.Combine(CacheDirectory, size);
        if (!Directory.Exists(directory))
            return;
        var inUse = _serving.Values.Concat(_prepared.Values).Where(s => s.Info.Size == size).Select(s => s.Info.Version).ToHashSet(StringComparer.Ordinal);
        var stale = new DirectoryInfo(directory).EnumerateDirectories()
            .Where(d => d.Name.Length == 16 && d.Name.All(char.IsAsciiHexDigitLower) && !inUse.Contains(d.Name)) // versions, not a copy being written
            .OrderByDescending(d => d.LastWriteTimeUtc)
            .Skip(Math.Max(0, _options.Retention.CachedVersions));
        foreach (var copy in stale)
        {
            try
            {
                copy.Delete(recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    /// <summary>Drops a prepared version that will not be served.</summary>
    public void Discard(string key, string version) => WithKey(key, model =>
    {
        if (_prepared.TryGetValue(model.ToString(), out var ready) && ready.Info.Version == version && _prepared.TryRemove(model.ToString(), out _))
            ready.Dispose();
        return 0;
    });

    /// <summary>One load or swap per key at a time (a second promote waits rather than loading a third copy).</summary>
    private T WithKey<T>(string key, Func<ModelKey, T> action)
    {
        var model = Resolve(key);
        var gate = _loading.GetOrAdd(model.ToString(), _ => new SemaphoreSlim(1, 1));
        gate.Wait();
        try
        {
            return action(model);
        }
        catch
        {
            // A model that never loaded does not keep its device: another one may try it.
            if (!_serving.ContainsKey(model.ToString()) && !_prepared.ContainsKey(model.ToString()))
                lock (_deviceOwners)
                    if (_deviceOwners.GetValueOrDefault(model.Device) == model.ToString())
                        _deviceOwners.Remove(model.Device);
            throw;
        }
        finally
        {
            gate.Release();
        }
    }

    private static async Task RetireWhenIdleAsync(Served old)
    {
        while (old.Engine.Running > 0 || old.Engine.Queued > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(100)).ConfigureAwait(false);
        old.Dispose();
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
            if (!_inventory.ShareDevices && _deviceOwners.TryGetValue(model.Device, out var owner) && owner != key)
                throw new InvalidOperationException($"{_inventory.Node}/{model.Device} already serves {owner}; a device serves one model " +
                    "unless ModelHost:ShareDevices is true");
            _deviceOwners[model.Device] = key;
            return model;
        }
    }

    private Served Load(ModelKey key, string version)
    {
        var device = TorchDevice(key.Device);
        var manifest = Store.Manifest(key.Size, version);
        string directory = Store.Fetch(manifest, CacheDirectory);
        var (precision, _) = PrecisionSupport.Resolve(PrecisionSupport.Parse(_options.Precision), device, decoding: true);
        Gpt model;
        try
        {
            model = Gpt2Checkpoint.Load(directory, precision.ToScalarType(), device, minVocabSize: Gpt2Tokenizer.VocabSize);
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or IOException)
        {
            throw new InvalidDataException($"Checkpoint {key.Size}/{version} cannot be loaded: {e.Message}", e);
        }
        if (!GivesFiniteLogits(model))
        {
            model.Dispose();
            throw new InvalidDataException($"Checkpoint {key.Size}/{version} is refused: its logits on a probe prompt are not finite (NaN or infinite weights)");
        }
        var limits = new BatcherOptions
        {
            Slots = _options.Slots,
            MaxQueue = _options.MaxQueue,
            MaxPromptTokens = Math.Min(_options.MaxPromptTokens, model.Config.BlockSize - 1),
            MaxNewTokens = _options.MaxNewTokens,
            Name = key.ToString(),
        };
        var engine = new ContinuousBatcher(model, limits);
        var info = new ModelInfo(key.ToString(), key.Size, key.Device, directory, $"{manifest.Kind}: {manifest.Description}", model.Config.ParameterCount,
            _inventory.Node, Silo: "", limits.MaxPromptTokens, limits.MaxNewTokens, version);
        return new Served(model, engine, info);
    }

    /// <summary>
    /// A model must pass this before it serves: weights that load but hold NaN or infinities (a diverged run, a bad
    /// conversion) would make every request fail. A short probe prompt must give finite logits.
    /// </summary>
    private static bool GivesFiniteLogits(Gpt model)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var noGrad = TorchSharp.torch.no_grad();
        var probe = TorchSharp.torch.tensor(new long[] { 464, 3290, 286, 257 }, [1L, 4L], device: model.Device); // (1, 4): "The dog of a"
        return model.forward(probe).isfinite().all().item<bool>();
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
        foreach (var served in _serving.Values.Concat(_prepared.Values))
            served.Dispose();
    }

    private sealed record Served(Gpt Model, ContinuousBatcher Engine, ModelInfo Info) : IDisposable
    {
        public void Dispose()
        {
            Engine.Dispose();
            Model.Dispose();
            // A released model's memory goes back to the machine, not just to malloc (see ReturnFreedMemory).
            OrleansGpt.Training.Numerics.NativeAllocator.ReturnFreedMemory();
        }
    }
}
