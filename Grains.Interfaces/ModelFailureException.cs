namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// The model could not compute this request (its logits were not finite, or the forward pass threw): a fault of the
/// checkpoint or the device, not of the request and not a lost silo. Only this request failed; the replica keeps
/// serving the others, and its health (<c>/healthz</c>) turns to failing when it fails several in a row.
/// (HTTP 500 with code "model_failure" at the edge.)
/// </summary>
[GenerateSerializer]
public sealed class ModelFailureException : Exception
{
    public ModelFailureException(string message, string replica) : base(message) => Replica = replica;

    /// <summary>The replica that failed, "size@node/device".</summary>
    [Id(0)]
    public string Replica { get; }
}
