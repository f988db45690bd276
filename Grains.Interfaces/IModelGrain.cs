namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// One GPT-2 checkpoint size served from one device, keyed "size@node/device" (for example "small@gpu-1/cuda:0"),
/// or "size@device" for that device on whichever silo owns one. A placement director puts the grain on the silo
/// whose device inventory holds the device, and a device serves one model unless the silo allows sharing.
/// Requests are decoded by the silo's continuous-batching engine for that checkpoint, never on a grain turn.
/// Callers that want "some replica of a size" ask <see cref="IModelRouterGrain"/> for a key first.
/// </summary>
public interface IModelGrain : IGrainWithStringKey
{
    /// <summary>Describes the hosted checkpoint, including how its weights were made.</summary>
    ValueTask<ModelInfo> GetInfoAsync(CancellationToken cancellationToken = default);

    /// <summary>Requests running and waiting on this replica now (what the router balances on).</summary>
    ValueTask<ModelLoad> GetLoadAsync(CancellationToken cancellationToken = default);

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
