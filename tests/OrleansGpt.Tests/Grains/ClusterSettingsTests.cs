using Microsoft.Extensions.Configuration;
using OrleansGpt.Hosting;
using OrleansGpt.Tests.Cluster;

namespace OrleansGpt.Tests.Grains;

public sealed class ClusterSettingsTests
{
    [Fact]
    public void LocalhostIsTheDefaultAndBadSettingsAreNamed()
    {
        var defaults = ClusterSettings.From(Configuration());
        Assert.Equal(("localhost", false, 11111, 30000), (defaults.Provider, defaults.UsesRedis, defaults.SiloPort, defaults.GatewayPort));
        foreach (var (key, value, named) in new[]
        {
            ("Provider", "zookeeper", "Cluster:Provider"),
            ("Provider", "redis", "Cluster:Redis is required"),
            ("SiloPort", "70000", "Cluster:SiloPort"),
            ("AdvertisedAddress", "my-host", "Cluster:AdvertisedAddress"),
            ("Gateways:0", "10.0.0.1", "Cluster:Gateways"),
        })
            Assert.Contains(named, Assert.Throws<ArgumentException>(() => ClusterSettings.From(Configuration((key, value)))).Message);
    }

    [Fact]
    public void AnUnreachableRedisStopsStartUpNamingTheSetting()
    {
        int closed = FreePorts.Next(); // nothing listens there
        var settings = ClusterSettings.From(Configuration(("Provider", "redis"), ("Redis", $"127.0.0.1:{closed}"), ("RedisConnectTimeout", "00:00:01")));
        var error = Assert.Throws<InvalidOperationException>(() => ClusterHostingExtensions.RedisOptions(settings));
        Assert.StartsWith($"Cluster:Redis: cannot reach Redis at '127.0.0.1:{closed}'", error.Message);
    }

    [Fact]
    public async Task AReachableRedisIsAccepted()
    {
        using var redis = await RedisServer.StartAsync();
        var settings = ClusterSettings.From(Configuration(("Provider", "redis"), ("Redis", redis.ConnectionString)));
        Assert.Equal($"127.0.0.1:{redis.Port}", ClusterHostingExtensions.RedisOptions(settings).EndPoints.Single().ToString());
    }

    private static IConfiguration Configuration(params (string Key, string Value)[] cluster) => new ConfigurationBuilder()
        .AddInMemoryCollection(cluster.Select(c => new KeyValuePair<string, string?>($"Cluster:{c.Key}", c.Value)))
        .Build();
}
