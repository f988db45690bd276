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
        int limit = options.Value.MaxPromptTokens;
        int[] prompt = PaperFormat.EncodePrompt(Gpt2Tokenizer.Shared, category, request.Title, limit);
        if (prompt.Length > limit)
            throw new ArgumentException($"The title is too long: {prompt.Length} tokens with its category tag and separator, and the prompt limit is {limit}", "title");
        string key = await GrainFactory.GetGrain<IModelRouterGrain>(0).PickReplicaAsync(request.ModelSize, request.Exclude, cancellationToken)
            ?? throw new ArgumentException($"No silo serves the '{request.ModelSize}' model");
        return new AbstractPlan(key, new GenerationRequest(prompt, WithSeparatorBanned(request.Sampling)));
    }

    /// <summary>
    /// An abstract never contains &lt;|sep|&gt; (it separates title from abstract, once, in the prompt), so it is banned
    /// after the prompt: a literal "&lt;|sep|&gt;" in an abstract is never what a user wants. A caller whose logit_bias
    /// already says something about &lt;|sep|&gt; decides for itself.
    /// </summary>
    public static SamplingOptions WithSeparatorBanned(SamplingOptions sampling)
    {
        if (sampling.LogitBias?.ContainsKey(Gpt2Tokenizer.Separator) == true)
            return sampling;
        var bias = new Dictionary<int, double>(sampling.LogitBias ?? new Dictionary<int, double>()) { [Gpt2Tokenizer.Separator] = -100 };
        return sampling with { LogitBias = bias };
    }
}
