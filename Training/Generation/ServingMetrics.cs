using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace OrleansGpt.Training.Generation;

/// <summary>
/// What every <see cref="ContinuousBatcher"/> in the process reports, through System.Diagnostics.Metrics (the
/// silo exports it as Prometheus text via OpenTelemetry): queue depth and running batch size per model,
/// generated tokens (rate() gives tokens/s), time to first token and inter-token latency.
/// </summary>
public static class ServingMetrics
{
    /// <summary>The meter name to subscribe to.</summary>
    public const string MeterName = "OrleansGpt.Serving";

    private static readonly Meter s_meter = new(MeterName);
    private static readonly ConcurrentDictionary<ContinuousBatcher, string> s_engines = new();

    internal static readonly Counter<long> GeneratedTokens = s_meter.CreateCounter<long>("orleansgpt.generated_tokens", "{token}", "Tokens generated");
    internal static readonly Histogram<double> TimeToFirstToken = s_meter.CreateHistogram<double>("orleansgpt.time_to_first_token", "s", "From a request's arrival to its first token",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32] });
    internal static readonly Histogram<double> InterTokenLatency = s_meter.CreateHistogram<double>("orleansgpt.inter_token_latency", "s", "Between consecutive tokens of a request",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6] });

    static ServingMetrics()
    {
        s_meter.CreateObservableGauge("orleansgpt.queue_depth", () => s_engines.Select(e => new Measurement<int>(e.Key.Queued, new KeyValuePair<string, object?>("model", e.Value))), "{request}", "Requests waiting for a batch slot");
        s_meter.CreateObservableGauge("orleansgpt.running_batch", () => s_engines.Select(e => new Measurement<int>(e.Key.Running, new KeyValuePair<string, object?>("model", e.Value))), "{request}", "Requests holding a batch slot");
    }

    internal static void Register(ContinuousBatcher engine, string model) => s_engines[engine] = model;

    internal static void Unregister(ContinuousBatcher engine) => s_engines.TryRemove(engine, out _);
}
