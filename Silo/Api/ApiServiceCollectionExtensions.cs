using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using OrleansGpt.Training.Generation;

namespace OrleansGpt.Silo.Api;

/// <summary>Limits of the HTTP API (appsettings section "Api").</summary>
public sealed class ApiOptions
{
    /// <summary>The largest request body accepted, in bytes; a larger one is refused with 413 before it is read. The
    /// longest prompt the model takes (a few thousand characters) fits many times over; Kestrel's own default
    /// (30 MB) would let every request make the silo read and parse that much.</summary>
    public long MaxRequestBodyBytes { get; set; } = 1 << 20;
}

/// <summary>Registers what the HTTP API needs beyond the grains: metrics exported for Prometheus.</summary>
public static class ApiServiceCollectionExtensions
{
    /// <summary>Collects the serving engine's meter (queue depth, running batch, tokens, time to first token,
    /// inter-token latency) with OpenTelemetry and exposes it in Prometheus' text format at /metrics.</summary>
    public static IServiceCollection AddOrleansGptApi(this IServiceCollection services)
    {
        services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(ServingMetrics.MeterName)
            .AddPrometheusExporter());
        services.AddOptions<OperatorOptions>().BindConfiguration("Operator");
        services.AddOptions<ApiOptions>().BindConfiguration("Api");
        services.AddSingleton<IConfigureOptions<KestrelServerOptions>>(provider => new ConfigureOptions<KestrelServerOptions>(kestrel =>
            kestrel.Limits.MaxRequestBodySize = provider.GetRequiredService<IOptions<ApiOptions>>().Value.MaxRequestBodyBytes));
        return services;
    }
}
