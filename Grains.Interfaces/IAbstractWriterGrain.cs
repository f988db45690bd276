namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// Prepares abstracts from titles: builds the paper's prompt "&lt;|CAT|&gt; Title &lt;|sep|&gt;" and picks the
/// least-loaded replica of the requested size. Stateless (an activation per silo, key 0). It returns what to ask
/// rather than streaming itself: a stateless worker may run several activations, and a stream's later pages
/// could reach one that never started it. <see cref="AbstractWriting.WriteAbstractAsync"/> does the rest.
/// </summary>
public interface IAbstractWriterGrain : IGrainWithIntegerKey
{
    /// <summary>The model grain and request that write <paramref name="request"/>'s abstract. Fails with an
    /// ArgumentException for an unknown category, an empty title, settings out of range or a size no silo serves.</summary>
    ValueTask<AbstractPlan> PrepareAsync(AbstractRequest request, CancellationToken cancellationToken = default);
}

/// <summary>One abstract to write.</summary>
/// <param name="Category">AI, LG, CL or CV (cs.AI, ... accepted).</param>
/// <param name="ModelSize">Which served size writes it (tiny, small, ...).</param>
/// <param name="Exclude">Replicas not to use (ones this request just lost).</param>
[GenerateSerializer, Immutable]
public sealed record AbstractRequest(
    [property: Id(0)] string Category,
    [property: Id(1)] string Title,
    [property: Id(2)] string ModelSize,
    [property: Id(3)] SamplingOptions Sampling,
    [property: Id(4)] IReadOnlyList<string>? Exclude = null);

/// <summary>Which model grain to ask, and what.</summary>
[GenerateSerializer, Immutable]
public sealed record AbstractPlan(
    [property: Id(0)] string ModelKey,
    [property: Id(1)] GenerationRequest Request);

/// <summary>Writing an abstract: how sessions, the HTTP API and batch jobs all do it.</summary>
public static class AbstractWriting
{
    /// <summary>Streams the abstract straight from the chosen model grain, until &lt;|endoftext|&gt; or max tokens,
    /// as the model's chunks (text, version, finish reason). A replica lost before the first chunk is replaced by
    /// another (<see cref="ResilientStreams"/>); one lost later ends the stream with
    /// <see cref="GenerationInterruptedException"/>. Besides <see cref="IAbstractWriterGrain.PrepareAsync"/>'s errors,
    /// a full replica queue fails with <see cref="ModelBusyException"/>.</summary>
    public static IAsyncEnumerable<GeneratedChunk> WriteAbstractAsync(this IGrainFactory grains, AbstractRequest request,
        CancellationToken cancellationToken = default) =>
        grains.FromReplicasAsync(async lost =>
        {
            var plan = await grains.GetGrain<IAbstractWriterGrain>(0).PrepareAsync(request with { Exclude = [.. lost] }, cancellationToken);
            return (plan.ModelKey, plan.Request);
        }, cancellationToken);
}
