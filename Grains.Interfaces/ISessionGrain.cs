namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// One user's session, keyed by user or session id: their category, model size and sampling settings, and a
/// bounded history of titles and abstracts. Persisted, so it survives deactivation and client restarts.
/// </summary>
public interface ISessionGrain : IGrainWithStringKey
{
    /// <summary>The current settings (defaults for a new session).</summary>
    ValueTask<SessionSettings> GetSettingsAsync(CancellationToken cancellationToken = default);

    /// <summary>Validates and stores new settings; invalid ones fail with an ArgumentException naming the setting
    /// and change nothing.</summary>
    ValueTask<SessionSettings> UpdateSettingsAsync(SessionSettings settings, CancellationToken cancellationToken = default);

    /// <summary>The most recent abstracts, oldest first.</summary>
    ValueTask<IReadOnlyList<HistoryEntry>> GetHistoryAsync(CancellationToken cancellationToken = default);

    /// <summary>Streams an abstract for <paramref name="title"/> with the session's settings (the model's chunks:
    /// text, version, finish reason on the last) and records it in the history once complete. A replica lost before
    /// the first chunk is replaced; one lost later ends the stream with <see cref="GenerationInterruptedException"/>
    /// and records nothing.</summary>
    /// <param name="seed">This abstract's seed instead of the session's setting (to write an abstract of the history
    /// again: the same title, category, model version and seed give the same text).</param>
    IAsyncEnumerable<GeneratedChunk> WriteAbstractAsync(string title, long? seed = null, CancellationToken cancellationToken = default);
}
