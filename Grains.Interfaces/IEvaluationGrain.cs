namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// The human evaluation the paper planned: people are shown a title with two abstracts, the real one from the eval
/// split and one a model generated for that title, in an order they cannot guess, and say which is real and how
/// fluent and relevant each reads. One grain per study (key "default"), persisted: every judgement is kept, a pair
/// shown and not yet judged is shown again after a reload, and nobody is shown a pair they have judged.
/// </summary>
public interface IEvaluationGrain : IGrainWithStringKey
{
    /// <summary>The pair <paramref name="evaluator"/> should judge next for <paramref name="model"/> (a served size):
    /// the one shown and not yet judged, else the next eval paper they have not judged, its abstract generated now
    /// (seconds) or reused from an earlier evaluator. InvalidOperationException when no evaluation data is configured
    /// or the evaluator has judged every paper.</summary>
    ValueTask<EvaluationPair> NextPairAsync(string evaluator, string model, CancellationToken cancellationToken = default);

    /// <summary>Records one judgement of a pair shown to its evaluator. ArgumentException for a pair not shown to
    /// them, one already judged, or a rating outside 1-5; nothing is recorded then.</summary>
    ValueTask<JudgementRecord> JudgeAsync(Judgement judgement, CancellationToken cancellationToken = default);

    /// <summary>Every judgement so far, oldest first.</summary>
    ValueTask<IReadOnlyList<JudgementRecord>> GetJudgementsAsync(CancellationToken cancellationToken = default);
}

/// <summary>A title and two abstracts, A and B; which one is real is kept by the grain.</summary>
[GenerateSerializer, Immutable]
public sealed record EvaluationPair(
    [property: Id(0)] string PairId,
    [property: Id(1)] string Category,
    [property: Id(2)] string Title,
    [property: Id(3)] string A,
    [property: Id(4)] string B,
    [property: Id(5)] int Judged);

/// <summary>What an evaluator says of a pair: which abstract they think is real ("a" or "b"), and each one's fluency
/// and relevance to the title, 1 (poor) to 5 (excellent).</summary>
[GenerateSerializer, Immutable]
public sealed record Judgement(
    [property: Id(0)] string Evaluator,
    [property: Id(1)] string PairId,
    [property: Id(2)] string PickedAsReal,
    [property: Id(3)] int FluencyA,
    [property: Id(4)] int RelevanceA,
    [property: Id(5)] int FluencyB,
    [property: Id(6)] int RelevanceB);

/// <summary>One stored judgement, resolved: whether the evaluator found the real abstract, and the ratings of the real
/// and the generated one, with what generated it.</summary>
[GenerateSerializer, Immutable]
public sealed record JudgementRecord(
    [property: Id(0)] string Evaluator,
    [property: Id(1)] string PairId,
    [property: Id(2)] string Category,
    [property: Id(3)] string Model,
    [property: Id(4)] string Version,
    [property: Id(5)] bool Correct,
    [property: Id(6)] int RealFluency,
    [property: Id(7)] int RealRelevance,
    [property: Id(8)] int GeneratedFluency,
    [property: Id(9)] int GeneratedRelevance,
    [property: Id(10)] DateTimeOffset At);
