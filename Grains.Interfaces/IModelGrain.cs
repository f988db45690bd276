namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// One GPT-2 checkpoint size served from one device, keyed "size@device" (for example "small@cpu:0").
/// Requests are decoded by the silo's continuous-batching engine for that checkpoint, never on a grain turn.
/// </summary>
public interface IModelGrain : IGrainWithStringKey
{
    /// <summary>Describes the hosted checkpoint, including how its weights were made.</summary>
    ValueTask<ModelInfo> GetInfoAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Streams the continuation of <paramref name="request"/>'s prompt as it is generated. Cancelling (or
    /// abandoning the stream) frees the request's batch slot at the next decode step. Fails with an
    /// ArgumentException for a prompt or settings out of bounds, and with a busy error when the queue is full.
    /// </summary>
    IAsyncEnumerable<GeneratedChunk> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Loads this size's checkpoint from disk again and serves it from now on (an operator's hot reload, or the
    /// end of a fine-tuning run). Requests already streaming finish on the previous weights.
    /// </summary>
    ValueTask<ModelInfo> ReloadAsync(CancellationToken cancellationToken = default);
}
