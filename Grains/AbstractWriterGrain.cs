using Orleans.Concurrency;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Grains;

/// <summary>Title in, model request out: the paper's prompt and the router's replica.</summary>
[StatelessWorker]
public sealed class AbstractWriterGrain(Microsoft.Extensions.Options.IOptions<ModelHostOptions> options) : Grain, IAbstractWriterGrain
{
    public async ValueTask<AbstractPlan> PrepareAsync(AbstractRequest request, CancellationToken cancellationToken = default)
    {
        var category = PaperFormat.ParseCategory(request.Category);
        ModelGrain.ToSettings(request.Sampling); // settings errors name the setting before any model is asked
        // Throws for an empty title, and for one too long for the prompt limit before tokenising it.
        int[] prompt = PaperFormat.EncodePrompt(Gpt2Tokenizer.Shared, category, request.Title, options.Value.MaxPromptTokens);
        string key = await GrainFactory.GetGrain<IModelRouterGrain>(0).PickReplicaAsync(request.ModelSize, request.Exclude, cancellationToken)
            ?? throw new ArgumentException($"No silo serves the '{request.ModelSize}' model");
        return new AbstractPlan(key, new GenerationRequest(prompt, request.Sampling));
    }
}
