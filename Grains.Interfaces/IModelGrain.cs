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
    /// First phase of a promotion: fetches <paramref name="version"/> from the checkpoint store into this silo's
    /// cache, checks its hashes and loads it beside the version being served, which keeps serving. Fails with the
    /// reason (damaged file, bad safetensors, no such version) and changes nothing.
    /// </summary>
    ValueTask<ModelInfo> PrepareVersionAsync(string version, CancellationToken cancellationToken = default);

    /// <summary>
    /// Second phase: serves <paramref name="version"/> from the next request on (loading it first if it was not
    /// prepared). Requests already running finish on the version they started with.
    /// </summary>
    ValueTask<ModelInfo> ActivateVersionAsync(string version, CancellationToken cancellationToken = default);

    /// <summary>Drops a prepared version that will not be activated (a promotion failed on another replica).</summary>
    ValueTask DiscardVersionAsync(string version, CancellationToken cancellationToken = default);
}
