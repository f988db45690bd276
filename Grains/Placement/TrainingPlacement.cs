using Orleans.Placement;
using Orleans.Runtime.Placement;

namespace OrleansGpt.Grains.Placement;

/// <summary>Places a training grain on a silo whose inventory lists a training device.</summary>
public sealed class TrainingPlacement : PlacementStrategy
{
    internal static TrainingPlacement Instance { get; } = new();
}

/// <summary>Marks a grain for <see cref="TrainingPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class TrainingPlacementAttribute() : PlacementAttribute(TrainingPlacement.Instance);

/// <summary>
/// Puts fine-tuning where an operator said it may run: a silo with ModelHost:TrainingDevices, preferring the one
/// doing the placement, then the lowest address (so a restarted grain goes back to the same silo when it can). With
/// no such silo the activation fails saying which setting to add, rather than training on a serving device.
/// </summary>
public sealed class TrainingPlacementDirector(DeviceInventories devices) : IPlacementDirector
{
    public async Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var silos = context.GetCompatibleSilos(target);
        var found = await Task.WhenAll(silos.Select(silo => devices.GetAsync(silo).AsTask()));
        var trainers = silos.Where((_, i) => found[i]?.TrainingDevices.Count > 0).ToList();
        if (trainers.Count == 0)
            throw new InvalidOperationException("No silo in the cluster may fine-tune: list a device in ModelHost:TrainingDevices " +
                "(for example [\"cpu:0\"]) on the silo that should train");
        return trainers.Contains(context.LocalSilo) ? context.LocalSilo : trainers.Min()!;
    }
}
