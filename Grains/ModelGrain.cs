using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Grains;

/// <summary>Hosts one checkpoint size on one device; its key is "size@device".</summary>
public sealed class ModelGrain : Grain, IModelGrain
{
    /// <inheritdoc />
    public ValueTask<ModelInfo> GetInfoAsync(CancellationToken cancellationToken = default)
    {
        string key = this.GetPrimaryKeyString();
        int at = key.IndexOf('@', StringComparison.Ordinal);
        if (at <= 0 || at == key.Length - 1)
            throw new ArgumentException($"Model grain key '{key}' is not of the form size@device (e.g. small@cpu:0)");
        return ValueTask.FromResult(new ModelInfo(key, key[..at], key[(at + 1)..]));
    }
}
