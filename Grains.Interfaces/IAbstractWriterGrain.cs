namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// Writes abstracts from titles: builds the paper's prompt "&lt;|CAT|&gt; Title &lt;|sep|&gt;", sends it to the
/// least-loaded replica of the requested size and streams the text until &lt;|endoftext|&gt; or max tokens.
/// Stateless (an activation per silo, key 0): sessions, the HTTP API and batch jobs all write abstracts through it.
/// </summary>
public interface IAbstractWriterGrain : IGrainWithIntegerKey
{
    /// <summary>Streams the abstract's text. Fails with an ArgumentException for an unknown category, an empty
    /// title, settings out of range or a size no silo serves, and with a busy error when the replica's queue is
    /// full.</summary>
    IAsyncEnumerable<string> WriteAsync(AbstractRequest request, CancellationToken cancellationToken = default);
}

/// <summary>One abstract to write.</summary>
/// <param name="Category">AI, LG, CL or CV (cs.AI, ... accepted).</param>
/// <param name="ModelSize">Which served size writes it (tiny, small, ...).</param>
[GenerateSerializer, Immutable]
public sealed record AbstractRequest(
    [property: Id(0)] string Category,
    [property: Id(1)] string Title,
    [property: Id(2)] string ModelSize,
    [property: Id(3)] SamplingOptions Sampling);
