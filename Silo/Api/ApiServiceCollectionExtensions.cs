using OpenTelemetry.Metrics;
using OrleansGpt.Training.Generation;

namespace OrleansGpt.Silo.Api;

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
        return services;
    }
}
