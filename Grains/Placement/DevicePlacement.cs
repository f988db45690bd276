using Orleans.Placement;
using Orleans.Runtime.Placement;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Grains.Placement;

/// <summary>Places a model grain on the silo that owns the device its key names.</summary>
public sealed class DevicePlacement : PlacementStrategy
{
    internal static DevicePlacement Instance { get; } = new();
}

/// <summary>Marks a grain keyed "size@[node/]device" for <see cref="DevicePlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class DevicePlacementAttribute() : PlacementAttribute(DevicePlacement.Instance);

/// <summary>
/// Reads every compatible silo's <see cref="DeviceInventory"/> from its silo metadata and places the grain on one
/// that owns the key's device (the one named by the key's node, if it has one). A key without a node prefers the
/// silo doing the placement, then the lowest silo address, so repeated placements agree. When no silo owns the
/// device the activation fails with a message listing the devices the cluster has.
/// </summary>
public sealed class DevicePlacementDirector(DeviceInventories devices) : IPlacementDirector
{
    public async Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var key = ModelKey.Parse(target.GrainIdentity.Key.ToString()!);
        var silos = context.GetCompatibleSilos(target);
        var found = await Task.WhenAll(silos.Select(silo => devices.GetAsync(silo).AsTask()));
        var inventories = silos.Select((silo, i) => (Silo: silo, Inventory: found[i])).ToList();
        var owners = inventories.Where(s => s.Inventory?.Owns(key) == true).Select(s => s.Silo).ToList();
        if (owners.Count == 0)
        {
            var known = inventories.Where(s => s.Inventory is not null).SelectMany(s => s.Inventory!.Devices.Select(d => $"{s.Inventory.Node}/{d}")).Order(StringComparer.Ordinal);
            throw new DeviceNotFoundException($"No silo owns the device for model grain '{key}'. Devices in the cluster: {string.Join(", ", known.DefaultIfEmpty("none"))}");
        }
        return owners.Contains(context.LocalSilo) ? context.LocalSilo : owners.Min()!;
    }
}
