namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// A GPT-2 checkpoint served from one device, keyed "size@device" (for example "small@cpu:0").
/// </summary>
/// <remarks>Generation, batching and placement arrive with the serving work (issue 4); for now the grain
/// reports what it would serve.</remarks>
public interface IModelGrain : IGrainWithStringKey
{
    /// <summary>Describes the model this grain hosts.</summary>
    ValueTask<ModelInfo> GetInfoAsync(CancellationToken cancellationToken = default);
}

/// <summary>What a model grain hosts.</summary>
/// <param name="Key">The grain key, "size@device".</param>
/// <param name="Size">The checkpoint size (tiny, distil, small, ...).</param>
/// <param name="Device">The device it is pinned to (cpu:0, cuda:0, ...).</param>
[GenerateSerializer, Immutable]
public sealed record ModelInfo(
    [property: Id(0)] string Key,
    [property: Id(1)] string Size,
    [property: Id(2)] string Device);
