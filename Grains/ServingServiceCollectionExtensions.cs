using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Orleans.Runtime.MembershipService.SiloMetadata;
using OrleansGpt.Grains.Placement;

namespace OrleansGpt.Grains;

/// <summary>Registers what model, router, session and training grains need on a silo.</summary>
public static class ServingServiceCollectionExtensions
{
    /// <summary>
    /// Adds the <see cref="ModelHost"/> with options from the "ModelHost" configuration section (then
    /// <paramref name="configure"/>), validated at start; publishes the silo's <see cref="DeviceInventory"/> in its
    /// metadata and places model grains with <see cref="DevicePlacementDirector"/>. A device or replica setting that
    /// does not fit throws here, before the silo joins the cluster.
    /// </summary>
    public static ISiloBuilder AddOrleansGptServing(this ISiloBuilder silo, Action<ModelHostOptions>? configure = null)
    {
        var options = silo.Configuration.GetSection(nameof(ModelHost)).Get<ModelHostOptions>() ?? new ModelHostOptions();
        configure?.Invoke(options);
        var inventory = DeviceInventory.Create(options, ModelHost.Sizes(options));

        var bound = silo.Services.AddOptions<ModelHostOptions>().BindConfiguration(nameof(ModelHost));
        if (configure is not null)
            bound.Configure(configure);
        bound.Validate(o => o.Slots > 0 && o.MaxQueue >= 0 && o.MaxPromptTokens > 0 && o.MaxNewTokens > 0, "ModelHost: Slots, MaxPromptTokens and MaxNewTokens must be positive, MaxQueue >= 0")
            .Validate(o => o.Precision is "fp32" or "bf16", "ModelHost:Precision must be fp32 or bf16")
            .Validate(o => o.DecodeKernel is "own" or "torch", "ModelHost:DecodeKernel must be own or torch")
            .ValidateOnStart();
        silo.Services.AddOptions<EvaluationOptions>().BindConfiguration(EvaluationOptions.SectionName);
        silo.Services.AddSingleton(inventory);
        silo.Services.AddSingleton<ModelHost>();
        silo.UseSiloMetadata(inventory.ToMetadata());
        silo.AddPlacementDirector<DevicePlacement, DevicePlacementDirector>();
        silo.AddPlacementDirector<TrainingPlacement, TrainingPlacementDirector>();
        silo.AddPlacementDirector<SiloPlacement, SiloPlacementDirector>();
        silo.Services.AddSingleton<DeviceInventories>();
        return silo;
    }
}
