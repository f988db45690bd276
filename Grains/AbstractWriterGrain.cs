using System.Runtime.CompilerServices;
using Orleans.Concurrency;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Grains;

/// <summary>Title in, abstract out: the paper's prompt, the router's replica, the model grain's stream.</summary>
[StatelessWorker]
public sealed class AbstractWriterGrain : Grain, IAbstractWriterGrain
{
    public async IAsyncEnumerable<string> WriteAsync(AbstractRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var category = PaperFormat.ParseCategory(request.Category);
        ModelGrain.ToSettings(request.Sampling); // settings errors name the setting before any model is asked
        int[] prompt = PaperFormat.EncodePrompt(Gpt2Tokenizer.Shared, category, request.Title); // throws for an empty title
        string key = await GrainFactory.GetGrain<IModelRouterGrain>(0).PickReplicaAsync(request.ModelSize, cancellationToken)
            ?? throw new ArgumentException($"No silo serves the '{request.ModelSize}' model");
        await foreach (var chunk in GrainFactory.GetGrain<IModelGrain>(key).GenerateAsync(new GenerationRequest(prompt, request.Sampling), cancellationToken))
            if (chunk.Text.Length > 0)
                yield return chunk.Text;
    }
}
