using System.Collections.Concurrent;
using Orleans.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace OrleansGpt.Grains.Placement;

/// <summary>
/// Every silo's <see cref="DeviceInventory"/>, as the router and the placement director need it. The first source is
/// Orleans' silo metadata cache. That cache fetches a silo's metadata once, when membership first shows it; a fetch
/// that fails (a silo restarted on the same port moments after its previous process) is not retried while membership
/// stays unchanged, and the silo's replicas would stay invisible. So a silo missing from it is asked directly, through
/// a <see cref="ISiloInventoryGrain"/> placed on that silo, and the answer is kept per silo address (which includes
/// the process's generation, so it cannot go stale).
/// </summary>
public sealed class DeviceInventories(ISiloMetadataCache metadata, IGrainFactory grains)
{
    private readonly ConcurrentDictionary<SiloAddress, DeviceInventory> _asked = new();

    /// <summary>The inventory of <paramref name="silo"/>, or null when it publishes none or cannot be reached.</summary>
    public async ValueTask<DeviceInventory?> GetAsync(SiloAddress silo)
    {
        if (DeviceInventory.FromMetadata(metadata.GetSiloMetadata(silo).Metadata) is { } published)
            return published;
        if (_asked.TryGetValue(silo, out var known))
            return known;
        try
        {
            var inventory = DeviceInventory.FromMetadata(await grains.GetGrain<ISiloInventoryGrain>(silo.ToParsableString()).GetMetadataAsync());
            if (inventory is not null)
                _asked[silo] = inventory;
            return inventory;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return null; // leaving or unreachable: not a place to send work now
        }
    }
}

/// <summary>Answers for the silo it runs on (the key is that silo's address): its device inventory.</summary>
public interface ISiloInventoryGrain : IGrainWithStringKey
{
    /// <summary>The silo's inventory as metadata entries (<see cref="DeviceInventory.ToMetadata"/>).</summary>
    ValueTask<Dictionary<string, string>> GetMetadataAsync();
}

/// <summary>See <see cref="ISiloInventoryGrain"/>.</summary>
[SiloPlacement]
public sealed class SiloInventoryGrain(DeviceInventory inventory) : Grain, ISiloInventoryGrain
{
    public ValueTask<Dictionary<string, string>> GetMetadataAsync() => ValueTask.FromResult(inventory.ToMetadata());
}

/// <summary>Places a grain on the silo whose address is its key.</summary>
public sealed class SiloPlacement : PlacementStrategy
{
    internal static SiloPlacement Instance { get; } = new();
}

/// <summary>Marks a grain for <see cref="SiloPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class SiloPlacementAttribute() : PlacementAttribute(SiloPlacement.Instance);

/// <summary>Puts the grain on the silo its key names; fails when that silo is not in the cluster.</summary>
public sealed class SiloPlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var silo = SiloAddress.FromParsableString(target.GrainIdentity.Key.ToString()!);
        return context.GetCompatibleSilos(target).Contains(silo)
            ? Task.FromResult(silo)
            : throw new SiloUnavailableException($"Silo {silo} is not an active member of the cluster");
    }
}
