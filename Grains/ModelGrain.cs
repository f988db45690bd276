using System.Runtime.CompilerServices;
using Orleans.Concurrency;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Grains.Placement;
using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Grains;

/// <summary>
/// Serves one checkpoint size on one device (key "size@[node/]device") through the silo's <see cref="ModelHost"/>,
/// placed by <see cref="DevicePlacementDirector"/> on the silo that owns the device. The grain only validates
/// and relays: decoding runs on the engine's own thread, and many requests stream through this activation at
/// once (it is reentrant for that reason).
/// </summary>
[Reentrant, DevicePlacement]
public sealed class ModelGrain(ModelHost host) : Grain, IModelGrain
{
    /// <summary>Loads the size's active version (seconds for large sizes) on the thread pool rather than on a grain
    /// turn; a version that cannot load fails the activation, and so the call that caused it, with the reason.</summary>
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        string key = this.GetPrimaryKeyString();
        string size = ModelKey.Parse(key).Size;
        string version = await GrainFactory.GetGrain<ICheckpointRegistryGrain>(size).GetActiveAsync(cancellationToken)
            ?? (await CheckpointRegistryGrain.ImportAsync(GrainFactory, host, size, cancellationToken)).Active;
        await Task.Run(() => host.Activate(key, version), cancellationToken);
    }

    public ValueTask<ModelInfo> GetInfoAsync(CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(host.Get(this.GetPrimaryKeyString()).Info with { Silo = RuntimeIdentity });

    public ValueTask<ModelLoad> GetLoadAsync(CancellationToken cancellationToken = default)
    {
        var engine = host.Get(this.GetPrimaryKeyString()).Engine;
        return ValueTask.FromResult(new ModelLoad(engine.Running, engine.Queued, engine.Slots, engine.Generated, host.IsFailing(engine)));
    }

    // Reading, verifying and converting a checkpoint takes seconds: off the grain's turn, on the thread pool.
    public async ValueTask<ModelInfo> PrepareVersionAsync(string version, CancellationToken cancellationToken = default) =>
        await Task.Run(() => host.Prepare(this.GetPrimaryKeyString(), version), cancellationToken) with { Silo = RuntimeIdentity };

    public async ValueTask<ModelInfo> ActivateVersionAsync(string version, CancellationToken cancellationToken = default) =>
        await Task.Run(() => host.Activate(this.GetPrimaryKeyString(), version), cancellationToken) with { Silo = RuntimeIdentity };

    public ValueTask DiscardVersionAsync(string version, CancellationToken cancellationToken = default)
    {
        host.Discard(this.GetPrimaryKeyString(), version);
        return ValueTask.CompletedTask;
    }

    public async IAsyncEnumerable<GeneratedChunk> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var settings = ToSettings(request.Sampling);
        var decoder = Gpt2Tokenizer.Shared.NewStreamingDecoder();
        string key = this.GetPrimaryKeyString();
        // The engine is looked up once: every token of this request comes from the version it was queued on, also
        // when a promotion swaps engines meanwhile.
        var (engine, info) = host.Get(key);
        IAsyncEnumerator<StreamedToken>? tokens = null;
        bool more;
        try
        {
            tokens = Start(engine, request, settings, cancellationToken).GetAsyncEnumerator(cancellationToken);
            more = await NextAsync(tokens, info);
        }
        catch (ObjectDisposedException)
        {
            // A swap retired the engine between looking it up and queueing: nothing was produced, so the engine now
            // serving takes the request.
            if (tokens is not null)
                await tokens.DisposeAsync();
            (engine, info) = host.Get(key);
            tokens = Start(engine, request, settings, cancellationToken).GetAsyncEnumerator(cancellationToken);
            more = await NextAsync(tokens, info);
        }
        try
        {
            for (; more; more = await NextAsync(tokens, info))
                yield return Chunk(tokens.Current, decoder, info);
        }
        finally
        {
            await tokens.DisposeAsync();
        }
    }

    /// <summary>The next token; a request the model failed on becomes <see cref="ModelFailureException"/>, which names
    /// the replica and crosses to the caller (the engine's own exception type is not an Orleans message).</summary>
    private static async ValueTask<bool> NextAsync(IAsyncEnumerator<StreamedToken> tokens, ModelInfo info)
    {
        try
        {
            return await tokens.MoveNextAsync();
        }
        catch (RequestFailedException e)
        {
            throw new ModelFailureException($"{info.Key} (version {info.Version}) failed on this request: {e.Message}", info.Key);
        }
    }

    private static IAsyncEnumerable<StreamedToken> Start(ContinuousBatcher engine, GenerationRequest request, SamplingSettings settings, CancellationToken cancellationToken)
    {
        try
        {
            return engine.GenerateAsync(request.PromptTokens, settings, cancellationToken);
        }
        catch (ServerBusyException e)
        {
            throw new ModelBusyException(e.Message, (int)Math.Ceiling(e.RetryAfter.TotalSeconds));
        }
    }

    private static GeneratedChunk Chunk(StreamedToken token, Gpt2Tokenizer.StreamingDecoder decoder, ModelInfo info)
    {
        string? finish = token.Finish switch { FinishReason.Stop => "stop", FinishReason.Length => "length", _ => null };
        // <|endoftext|> ends the text; it is reported as the finish reason, not written out.
        string text = token.Token == Gpt2Tokenizer.EndOfText ? "" : decoder.Push(token.Token);
        if (finish is not null)
            text += decoder.Flush();
        return new GeneratedChunk(text, [token.Token], finish, info.Version, info.Key);
    }

    /// <summary>Client sampling options as the engine's settings; out-of-range values throw ArgumentOutOfRangeException.</summary>
    public static SamplingSettings ToSettings(SamplingOptions o) => new SamplingSettings
    {
        TopP = o.TopP,
        TopK = o.TopK,
        Temperature = o.Temperature,
        MaxNewTokens = o.MaxTokens,
        Seed = o.Seed,
        LogitBias = o.LogitBias,
    }.Validate();
}
