namespace OrleansGpt.Grains.Interfaces;

/// <summary>A model's request queue is full; the caller should retry after <see cref="RetryAfterSeconds"/>
/// (HTTP 429 with Retry-After at the edge).</summary>
[GenerateSerializer]
public sealed class ModelBusyException : Exception
{
    public ModelBusyException(string message, int retryAfterSeconds) : base(message) => RetryAfterSeconds = retryAfterSeconds;

    /// <summary>Seconds to wait before retrying.</summary>
    [Id(0)]
    public int RetryAfterSeconds { get; }
}
