using Microsoft.Extensions.DependencyInjection;

namespace OrleansGpt.Grains;

/// <summary>Registers what model and session grains need on a silo.</summary>
public static class ServingServiceCollectionExtensions
{
    /// <summary>Adds the <see cref="ModelHost"/> with options from the "ModelHost" configuration section,
    /// validated at start.</summary>
    public static IServiceCollection AddOrleansGptServing(this IServiceCollection services)
    {
        services.AddOptions<ModelHostOptions>()
            .BindConfiguration(nameof(ModelHost))
            .Validate(o => o.Slots > 0 && o.MaxQueue >= 0 && o.MaxPromptTokens > 0 && o.MaxNewTokens > 0, "ModelHost: Slots, MaxPromptTokens and MaxNewTokens must be positive, MaxQueue >= 0")
            .Validate(o => o.Precision is "fp32" or "bf16", "ModelHost:Precision must be fp32 or bf16")
            .ValidateOnStart();
        services.AddSingleton<ModelHost>();
        return services;
    }
}
