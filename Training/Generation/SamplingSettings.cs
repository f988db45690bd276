namespace OrleansGpt.Training.Generation;

/// <summary>How the next token is chosen. Applied in Hugging Face's order: repetition penalty, temperature,
/// top-k, then top-p.</summary>
public sealed record SamplingSettings
{
    /// <summary>Divides the logits; 0 means greedy (always the most likely token).</summary>
    /// <remarks>Default 1: the model's own distribution.</remarks>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Keep only the k most likely tokens; 0 turns the filter off.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus sampling (Holtzman et al. 2019): keep the smallest set of most likely tokens whose
    /// probabilities sum to at least p, renormalised. 1 turns the filter off.</summary>
    /// <remarks>Default 1; the paper's generations use 0.9.</remarks>
    public double TopP { get; init; } = 1.0;

    /// <summary>CTRL's repetition penalty (Keskar et al. 2019): tokens already in the prompt or output have
    /// positive logits divided and negative logits multiplied by this. 1 turns it off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>Tokens to generate at most (the end-of-text token counts).</summary>
    public int MaxNewTokens { get; init; } = 256;

    /// <summary>Seed of this request's own random generator; null picks one (reported back, so any output can be
    /// reproduced).</summary>
    public long? Seed { get; init; }

    /// <summary>OpenAI's logit_bias: added to a token's logit before anything else; -100 bans the token, +100 all but
    /// forces it. Null or empty: none.</summary>
    public IReadOnlyDictionary<int, double>? LogitBias { get; init; }

    /// <summary>Most entries a logit_bias may have (OpenAI's limit).</summary>
    public const int MaxLogitBiasEntries = 300;

    /// <summary>The smallest non-zero temperature accepted.</summary>
    public const double MinTemperature = 0.01;

    /// <summary>The largest temperature accepted.</summary>
    public const double MaxTemperature = 100;

    /// <summary>Always the most likely token.</summary>
    public static SamplingSettings Greedy { get; } = new() { Temperature = 0 };

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public SamplingSettings Validate()
    {
        // Below 0.01 the scaled logits overflow towards a one-hot that greedy (0) gives exactly; above 100 they are
        // flat enough that sampling is uniform over the vocabulary. Neither is a setting anyone means.
        if (!(Temperature == 0 || Temperature is >= MinTemperature and <= MaxTemperature))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, $"temperature must be 0 (greedy) or between {MinTemperature} and {MaxTemperature}");
        if (TopK < 0)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "top_k must be >= 0 (0 = off)");
        if (double.IsNaN(TopP) || TopP <= 0 || TopP > 1)
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "top_p must be in (0, 1]");
        if (double.IsNaN(RepetitionPenalty) || RepetitionPenalty <= 0)
            throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "repetition_penalty must be > 0 (1 = off)");
        if (MaxNewTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "max_tokens must be > 0");
        if (LogitBias is { Count: > MaxLogitBiasEntries })
            throw new ArgumentOutOfRangeException(nameof(LogitBias), LogitBias.Count, $"logit_bias may have at most {MaxLogitBiasEntries} entries");
        foreach (var (token, bias) in LogitBias ?? new Dictionary<int, double>())
        {
            if (token < 0)
                throw new ArgumentOutOfRangeException(nameof(LogitBias), token, $"logit_bias key {token} is not a token id");
            if (!(bias is >= -100 and <= 100))
                throw new ArgumentOutOfRangeException(nameof(LogitBias), bias, $"logit_bias value {bias} for token {token} must be between -100 and 100");
        }
        return this;
    }
}
