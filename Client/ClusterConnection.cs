using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;
using OrleansGpt.Hosting;
using Orleans.Runtime.Messaging;
using Polly;
using Polly.Retry;

namespace OrleansGpt.Client;

/// <summary>An Orleans client connected to the local cluster, with a retry pipeline for transient failures.</summary>
public sealed class ClusterConnection : IAsyncDisposable
{
    private readonly IHost _host;

    private ClusterConnection(IHost host) => _host = host;

    public IClusterClient Cluster => _host.Services.GetRequiredService<IClusterClient>();

    /// <summary>
    /// Retries calls that failed because the cluster was briefly unreachable (a silo restarting, a dropped
    /// connection, a timeout): at most 3 retries, exponential back-off from 200 ms with jitter so many clients do
    /// not retry in step. Errors in the request itself (bad settings, busy) are not retried.
    /// </summary>
    public static ResiliencePipeline Transient { get; } = new ResiliencePipelineBuilder()
        .AddRetry(new RetryStrategyOptions
        {
            MaxRetryAttempts = 3,
            Delay = TimeSpan.FromMilliseconds(200),
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
            ShouldHandle = new PredicateBuilder()
                .Handle<SiloUnavailableException>()
                .Handle<ConnectionFailedException>()
                .Handle<OrleansMessageRejectionException>()
                .Handle<GatewayTooBusyException>()
                .Handle<TimeoutException>(),
        })
        .Build();

    /// <summary>
    /// Connects to the cluster the "Cluster" settings name (environment variables such as Cluster__Provider=redis and
    /// Cluster__Redis=host:6379, then <paramref name="overrides"/> from the command line): with Redis the gateways
    /// come from the membership table, with localhost the gateway at Cluster:GatewayPort (30000 by default).
    /// </summary>
    public static async Task<ClusterConnection> ConnectAsync(IReadOnlyDictionary<string, string?>? overrides = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(overrides ?? new Dictionary<string, string?>());
        builder.Logging.SetMinimumLevel(LogLevel.Warning); // Orleans' start-up chatter would bury the output
        // A stream abandoned because its silo died is reported by GenerationInterruptedException; Orleans' own warning
        // about the proxy it could not close would only repeat that, with a stack trace.
        builder.Logging.AddFilter("Orleans.Runtime.AsyncEnumerableRequest", LogLevel.Error);
        builder.UseOrleansClient(client => client.AddOrleansGptCluster(builder.Configuration));
        var host = builder.Build();
        await host.StartAsync();
        return new ClusterConnection(host);
    }

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync();
        _host.Dispose();
    }
}
