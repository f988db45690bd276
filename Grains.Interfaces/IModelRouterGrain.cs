namespace OrleansGpt.Grains.Interfaces;

/// <summary>
/// Finds model replicas across the cluster. Each silo advertises the replicas it hosts ("size@node/device") in its
/// silo metadata; the router lists them and sends each request for a size to the least-loaded replica. Stateless:
/// an activation runs on every silo that calls it, so routing costs no extra network hop. Use key 0.
/// </summary>
public interface IModelRouterGrain : IGrainWithIntegerKey
{
    /// <summary>Every replica advertised by an active silo, ordered by size then key.</summary>
    ValueTask<IReadOnlyList<ReplicaInfo>> GetReplicasAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// The key of the least-loaded replica of <paramref name="size"/> (fewest running and queued requests per slot;
    /// ties broken at random), or null when no active silo serves that size. Replicas in <paramref name="exclude"/>
    /// (ones a caller just lost) are passed over.
    /// </summary>
    ValueTask<string?> PickReplicaAsync(string size, IReadOnlyList<string>? exclude = null, CancellationToken cancellationToken = default);
}
