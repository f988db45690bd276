using Microsoft.Extensions.Options;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Hosting;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Grains;

/// <summary>Where the human evaluation takes its real abstracts, and how it generates the others (section "Evaluation").</summary>
public sealed class EvaluationOptions
{
    public const string SectionName = "Evaluation";

    /// <summary>A prepared data directory (written by the Training project's prepare command), relative to
    /// ModelHost:DataDirectory; its eval split supplies the titles and real abstracts. Empty: no evaluation.</summary>
    public string Data { get; set; } = "";

    /// <summary>Longest generated abstract, in tokens (real arXiv abstracts are ~250 GPT-2 tokens).</summary>
    public int MaxTokens { get; set; } = 320;

    /// <summary>Nucleus sampling's p for the generated abstracts (the paper's appendix uses 0.9).</summary>
    public double TopP { get; set; } = 0.9;
}

/// <summary>What a study keeps: every judgement, the pair each evaluator has been shown and not yet judged, and the
/// generated abstract of each paper for each size (so every evaluator judges the same text).</summary>
[GenerateSerializer]
public sealed class EvaluationState
{
    [Id(0)] public List<JudgementRecord> Judgements { get; set; } = [];
    [Id(1)] public Dictionary<string, ShownPair> Shown { get; set; } = [];
    [Id(2)] public Dictionary<string, GeneratedSample> Samples { get; set; } = [];
}

/// <summary>A pair on an evaluator's screen: eval paper <paramref name="Example"/> against <paramref name="Model"/>'s abstract.</summary>
[GenerateSerializer, Immutable]
public sealed record ShownPair([property: Id(0)] string PairId, [property: Id(1)] int Example, [property: Id(2)] string Model, [property: Id(3)] bool RealIsA,
    [property: Id(4)] string Category = "");

/// <summary>An abstract generated for an eval paper's title; the seed is the paper's index, so it can be regenerated.</summary>
[GenerateSerializer, Immutable]
public sealed record GeneratedSample([property: Id(0)] string Text, [property: Id(1)] string Version, [property: Id(2)] long Seed);

/// <summary>See <see cref="IEvaluationGrain"/>. Papers are taken in one fixed shuffled order, so evaluators judge the
/// same pairs (and agreement between them can be measured); A or B is the real one by a hash of evaluator and pair,
/// so a reload shows the same order.</summary>
public sealed class EvaluationGrain(
    [PersistentState("study", GrainStorage.Evaluations)] IPersistentState<EvaluationState> state,
    ModelHost host,
    IOptions<EvaluationOptions> options) : Grain, IEvaluationGrain
{
    private readonly EvaluationOptions _options = options.Value;

    public async ValueTask<EvaluationPair> NextPairAsync(string evaluator, string model, CancellationToken cancellationToken = default)
    {
        CheckEvaluator(evaluator);
        string data = DataDirectory();
        if (state.State.Shown.TryGetValue(evaluator, out var shown) && shown.Model == model)
            return await PairAsync(evaluator, data, shown, cancellationToken);

        var judged = state.State.Judgements.Where(j => j.Evaluator == evaluator).Select(j => j.PairId).ToHashSet(StringComparer.Ordinal);
        var categories = await Task.Run(() => { using var split = TokenSplit.Open(data, "eval"); return split.Examples.Select(e => e.Category).ToArray(); }, cancellationToken);
        int? next = Enumerable.Range(0, categories.Length).OrderBy(i => Mix((ulong)i)).Cast<int?>().FirstOrDefault(i => !judged.Contains(PairId(model, i!.Value)));
        if (next is not int example)
            throw new InvalidOperationException($"{evaluator} has judged every one of the {categories.Length} eval papers for '{model}'");
        var pair = new ShownPair(PairId(model, example), example, model, RealIsA: (Mix(Hash(evaluator) ^ Hash(PairId(model, example))) & 1) == 0,
            categories[example].ToString());
        state.State.Shown[evaluator] = pair;
        var result = await PairAsync(evaluator, data, pair, cancellationToken);
        await state.WriteStateAsync(cancellationToken);
        return result;
    }

    public async ValueTask<JudgementRecord> JudgeAsync(Judgement judgement, CancellationToken cancellationToken = default)
    {
        CheckEvaluator(judgement.Evaluator);
        if (!state.State.Shown.TryGetValue(judgement.Evaluator, out var shown) || shown.PairId != judgement.PairId)
            throw new ArgumentException(state.State.Judgements.Any(j => j.Evaluator == judgement.Evaluator && j.PairId == judgement.PairId)
                ? $"{judgement.Evaluator} has already judged pair {judgement.PairId}"
                : $"Pair {judgement.PairId} is not the one shown to {judgement.Evaluator}: ask for the next pair first", "pair_id");
        if (judgement.PickedAsReal is not ("a" or "b"))
            throw new ArgumentException("picked must be \"a\" or \"b\": the abstract you think is the real one", "picked");
        foreach (var (name, rating) in new[] { ("fluency_a", judgement.FluencyA), ("relevance_a", judgement.RelevanceA), ("fluency_b", judgement.FluencyB), ("relevance_b", judgement.RelevanceB) })
            if (rating is < 1 or > 5)
                throw new ArgumentException($"{name} must be a rating from 1 to 5, not {rating}", name);

        var sample = state.State.Samples[shown.PairId];
        bool pickedA = judgement.PickedAsReal == "a";
        var (real, generated) = shown.RealIsA
            ? ((judgement.FluencyA, judgement.RelevanceA), (judgement.FluencyB, judgement.RelevanceB))
            : ((judgement.FluencyB, judgement.RelevanceB), (judgement.FluencyA, judgement.RelevanceA));
        var record = new JudgementRecord(judgement.Evaluator, shown.PairId, shown.Category, shown.Model, sample.Version, Correct: pickedA == shown.RealIsA,
            real.Item1, real.Item2, generated.Item1, generated.Item2, DateTimeOffset.UtcNow);
        state.State.Judgements.Add(record);
        state.State.Shown.Remove(judgement.Evaluator);
        await state.WriteStateAsync(cancellationToken);
        return record;
    }

    public ValueTask<IReadOnlyList<JudgementRecord>> GetJudgementsAsync(CancellationToken cancellationToken = default) =>
        ValueTask.FromResult<IReadOnlyList<JudgementRecord>>([.. state.State.Judgements]);

    /// <summary>The pair as the evaluator sees it; the generated abstract is made on first need (or again when the size
    /// now serves another version than the one that wrote it).</summary>
    private async Task<EvaluationPair> PairAsync(string evaluator, string data, ShownPair shown, CancellationToken cancellationToken)
    {
        var (category, title, realAbstract) = await Task.Run(() => Paper(data, shown.Example), cancellationToken);
        string? active = await GrainFactory.GetGrain<ICheckpointRegistryGrain>(shown.Model).GetActiveAsync(cancellationToken);
        if (!state.State.Samples.TryGetValue(shown.PairId, out var sample) || (active is not null && sample.Version != active && !IsJudged(shown.PairId)))
        {
            var text = new System.Text.StringBuilder();
            string version = "";
            var request = new AbstractRequest(category, title, shown.Model, new SamplingOptions(TopP: _options.TopP, MaxTokens: _options.MaxTokens, Seed: shown.Example));
            await foreach (var chunk in GrainFactory.WriteAbstractAsync(request, cancellationToken))
            {
                text.Append(chunk.Text);
                version = chunk.Version;
            }
            sample = new GeneratedSample(text.ToString().Trim(), version, shown.Example);
            state.State.Samples[shown.PairId] = sample;
            await state.WriteStateAsync(cancellationToken);
        }
        int judged = state.State.Judgements.Count(j => j.Evaluator == evaluator);
        return shown.RealIsA
            ? new EvaluationPair(shown.PairId, category, title, realAbstract, sample.Text, judged)
            : new EvaluationPair(shown.PairId, category, title, sample.Text, realAbstract, judged);
    }

    private bool IsJudged(string pairId) => state.State.Judgements.Any(j => j.PairId == pairId);

    /// <summary>An eval paper's category, title and abstract, decoded from its tokens.</summary>
    private static (string Category, string Title, string Abstract) Paper(string data, int example)
    {
        using var split = TokenSplit.Open(data, "eval");
        var span = split.Examples[example];
        var (title, text) = PaperFormat.DecodeExample(split.Slice(span.Offset, span.Length), span.Category);
        return (span.Category.ToString(), title, text);
    }

    private string DataDirectory()
    {
        if (string.IsNullOrWhiteSpace(_options.Data))
            throw new InvalidOperationException("No evaluation data: set Evaluation:Data to a prepared data directory (relative to ModelHost:DataDirectory) whose eval split supplies the real abstracts");
        string directory = host.ResolveDataDirectory(_options.Data);
        if (!File.Exists(TokenSplit.ExamplesPath(directory, "eval")))
            throw new InvalidOperationException($"Evaluation:Data '{directory}' holds no prepared eval split: run the Training project's prepare command");
        return directory;
    }

    private static void CheckEvaluator(string evaluator)
    {
        if (evaluator.Length is 0 or > 128 || !evaluator.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            throw new ArgumentException("evaluator is an id of 1 to 128 letters, digits, '-' and '_' (the page keeps one per browser)", "evaluator");
    }

    private static string PairId(string model, int example) => $"{model}-{example}";

    private static ulong Hash(string text) => text.Aggregate(1469598103934665603UL, (h, c) => (h ^ c) * 1099511628211UL); // FNV-1a

    private static ulong Mix(ulong x)
    {
        // SplitMix64's finaliser: a fixed, well-spread order from an index.
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9UL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebUL;
        return x ^ (x >> 31);
    }
}
