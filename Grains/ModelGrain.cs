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
    /// <summary>Loads the checkpoint (seconds for large sizes) on the thread pool rather than on a grain turn; a
    /// checkpoint that cannot load fails the activation, and so the call that caused it, with the reason.</summary>
    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        string key = this.GetPrimaryKeyString();
        return Task.Run(() => host.Get(key), cancellationToken);
    }

    public ValueTask<ModelInfo> GetInfoAsync(CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(host.Get(this.GetPrimaryKeyString()).Info with { Silo = RuntimeIdentity });

    public ValueTask<ModelLoad> GetLoadAsync(CancellationToken cancellationToken = default)
    {
        var engine = host.Get(this.GetPrimaryKeyString()).Engine;
        return ValueTask.FromResult(new ModelLoad(engine.Running, engine.Queued, engine.Slots));
    }

    public async ValueTask<ModelInfo> ReloadAsync(CancellationToken cancellationToken = default)
    {
        string key = this.GetPrimaryKeyString();
        // Reading and converting a checkpoint takes seconds: off the grain's turn, on the thread pool.
        return await Task.Run(() => host.Reload(key), cancellationToken) with { Silo = RuntimeIdentity };
    }

    public async IAsyncEnumerable<GeneratedChunk> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var settings = ToSettings(request.Sampling);
        var decoder = Gpt2Tokenizer.Shared.NewStreamingDecoder();
        IAsyncEnumerable<StreamedToken> tokens;
        try
        {
            try
            {
                tokens = host.Get(this.GetPrimaryKeyString()).Engine.GenerateAsync(request.PromptTokens, settings, cancellationToken);
            }
            catch (ObjectDisposedException)
            {
                // A reload retired the engine between looking it up and queueing: the new one takes the request.
                tokens = host.Get(this.GetPrimaryKeyString()).Engine.GenerateAsync(request.PromptTokens, settings, cancellationToken);
            }
        }
        catch (ServerBusyException e)
        {
            throw new ModelBusyException(e.Message, (int)Math.Ceiling(e.RetryAfter.TotalSeconds));
        }
        await foreach (var token in tokens)
        {
            string? finish = token.Finish switch { FinishReason.Stop => "stop", FinishReason.Length => "length", _ => null };
            // <|endoftext|> ends the text; it is reported as the finish reason, not written out.
            string text = token.Token == Gpt2Tokenizer.EndOfText ? "" : decoder.Push(token.Token);
            if (finish is not null)
                text += decoder.Flush();
            yield return new GeneratedChunk(text, [token.Token], finish);
        }
    }

    /// <summary>Client sampling options as the engine's settings; out-of-range values throw ArgumentOutOfRangeException.</summary>
    public static SamplingSettings ToSettings(SamplingOptions o) => new SamplingSettings
    {
        TopP = o.TopP,
        TopK = o.TopK,
        Temperature = o.Temperature,
        MaxNewTokens = o.MaxTokens,
        Seed = o.Seed,
    }.Validate();
}
