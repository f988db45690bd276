using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Configuration;
using Orleans.Connections.Security;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using StackExchange.Redis;

namespace OrleansGpt.Hosting;

/// <summary>
/// The one place that turns <see cref="ClusterSettings"/> into Orleans providers: localhost or Redis membership,
/// memory or Redis grain storage. Grains never name a provider, only a <see cref="GrainStorage"/> name.
/// </summary>
public static class ClusterHostingExtensions
{
    /// <summary>
    /// Membership, endpoints and grain storage for a silo, from the "Cluster" section. With Redis, fails here,
    /// naming Cluster:Redis, when the server cannot be reached.
    /// </summary>
    public static ISiloBuilder AddOrleansGptCluster(this ISiloBuilder silo, IConfiguration configuration)
    {
        var settings = ClusterSettings.From(configuration);
        silo.Services.AddOptions<ClusterMembershipOptions>().BindConfiguration($"{ClusterSettings.SectionName}:Membership");
        // Orleans' default directory deactivates every grain whose directory partition lived on a silo that died: a
        // model grain on a healthy silo would lose its running streams with it. The distributed directory hands a
        // dead silo's ranges over, recovering the entries from the silos that host the activations.
#pragma warning disable ORLEANSEXP003 // experimental in Orleans 10; the fault tests exercise it
        silo.AddDistributedGrainDirectory();
#pragma warning restore ORLEANSEXP003
        if (Tls(settings) is var (certificate, configure))
            silo.UseTls(certificate, configure);
        if (!settings.UsesRedis)
        {
            silo.UseLocalhostClustering(settings.SiloPort, settings.GatewayPort, settings.PrimarySilo, settings.ServiceId, settings.ClusterId);
            return silo.AddOrleansGptStorage(settings);
        }

        var redis = RedisOptions(settings);
        silo.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = (settings.ClusterId, settings.ServiceId));
        if (settings.Kubernetes)
            silo.UseKubernetesHosting();
        if (settings.AdvertisedAddress is { Length: > 0 } address)
            silo.ConfigureEndpoints(IPAddress.Parse(address), settings.SiloPort, settings.GatewayPort, listenOnAnyHostAddress: true);
        else if (!settings.Kubernetes)
            silo.ConfigureEndpoints(settings.SiloPort, settings.GatewayPort, listenOnAnyHostAddress: true);
        silo.UseRedisClustering(o => o.ConfigurationOptions = redis);
        return AddStorage(silo, redis);
    }

    /// <summary>The grain storages of <see cref="GrainStorage.All"/>: in memory for localhost, in Redis otherwise.
    /// Test clusters that configure their own membership call this alone.</summary>
    public static ISiloBuilder AddOrleansGptStorage(this ISiloBuilder silo, ClusterSettings settings) =>
        AddStorage(silo, settings.UsesRedis ? RedisOptions(settings) : null);

    /// <summary>Redis grain storage when <paramref name="redis"/> is given, memory otherwise.</summary>
    private static ISiloBuilder AddStorage(ISiloBuilder silo, ConfigurationOptions? redis)
    {
        foreach (string name in GrainStorage.All)
        {
            if (redis is not null)
            {
                // Orleans' own serializer, not the JSON default: grain state types are [GenerateSerializer] records whose
                // [Id]s keep stored state readable across versions, and JSON cannot rebuild collection-expression lists.
                silo.AddRedisGrainStorage(name, o => o.Configure<Orleans.Serialization.Serializer>((r, serializer) =>
                {
                    r.ConfigurationOptions = redis.Clone();
                    r.GrainStorageSerializer = new Orleans.Storage.OrleansGrainStorageSerializer(serializer);
                }));
            }
            else
            {
                silo.AddMemoryGrainStorage(name);
            }
        }
        return silo;
    }

    /// <summary>A client of the cluster the "Cluster" section names: the gateways in Cluster:Gateways if any; else,
    /// with Redis, every gateway in the membership table; with localhost, the gateway at Cluster:GatewayPort.</summary>
    public static IClientBuilder AddOrleansGptCluster(this IClientBuilder client, IConfiguration configuration)
    {
        var settings = ClusterSettings.From(configuration);
        if (Tls(settings) is var (certificate, configure))
            client.UseTls(certificate, configure);
        if (settings.Gateways.Count > 0)
        {
            client.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = (settings.ClusterId, settings.ServiceId));
            return client.UseStaticClustering([.. settings.Gateways.Select(g => IPEndPoint.Parse(g))]);
        }
        if (!settings.UsesRedis)
            return client.UseLocalhostClustering(settings.GatewayPort, settings.ServiceId, settings.ClusterId);
        var redis = RedisOptions(settings);
        client.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = (settings.ClusterId, settings.ServiceId));
        // A silo that died leaves the gateway list within seconds rather than the default minute.
        client.Configure<GatewayOptions>(o => o.GatewayListRefreshPeriod = TimeSpan.FromSeconds(5));
        return client.UseRedisClustering(o => o.ConfigurationOptions = redis);
    }

    /// <summary>
    /// Cluster:TlsCertificate as Orleans' TLS settings, or null when it is not set. Mutual: a silo requires a certificate
    /// from every silo and client that connects, and a client requires one from its gateway; a peer is trusted when its
    /// certificate was issued by Cluster:TlsAuthority, or, without one, when it is this process's own certificate.
    /// Host names are not checked: silos are reached by the addresses in the membership table, not by name.
    /// </summary>
    public static (X509Certificate2 Certificate, Action<TlsOptions> Configure)? Tls(ClusterSettings settings)
    {
        if (settings.TlsCertificate is not { Length: > 0 } path)
            return null;
        X509Certificate2 certificate;
        try
        {
            certificate = X509CertificateLoader.LoadPkcs12FromFile(path, settings.TlsCertificatePassword);
        }
        catch (CryptographicException e)
        {
            throw new ArgumentException($"Cluster:TlsCertificate '{path}' cannot be read ({e.Message.TrimEnd('.')}): it must be a .pfx with the private key, " +
                "and Cluster:TlsCertificatePassword its password");
        }
        if (!certificate.HasPrivateKey)
            throw new ArgumentException($"Cluster:TlsCertificate '{path}' has no private key: export the certificate together with its key");
        var authority = settings.TlsAuthority is { Length: > 0 } ca ? X509CertificateLoader.LoadCertificateFromFile(ca) : null;
        return (certificate, options =>
        {
            options.RemoteCertificateMode = RemoteCertificateMode.RequireCertificate;
            options.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
            options.RemoteCertificateValidation = (remote, _, _) => IsTrustedPeer(remote, certificate, authority);
        });
    }

    /// <summary>Whether a peer's certificate is one this cluster trusts (see <see cref="Tls"/>).</summary>
    public static bool IsTrustedPeer(X509Certificate2? remote, X509Certificate2 own, X509Certificate2? authority)
    {
        if (remote is null)
            return false;
        if (authority is null)
            return remote.RawDataMemory.Span.SequenceEqual(own.RawDataMemory.Span);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(authority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(remote);
    }

    /// <summary>
    /// Parses Cluster:Redis and checks that the server answers a PING within Cluster:RedisConnectTimeout, so a
    /// wrong address stops the process at start with the setting's name instead of a retry loop in the logs.
    /// </summary>
    public static ConfigurationOptions RedisOptions(ClusterSettings settings)
    {
        ConfigurationOptions options;
        try
        {
            options = ConfigurationOptions.Parse(settings.Redis!);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"Cluster:Redis is not a valid StackExchange.Redis connection string ('{settings.Redis}'): {e.Message}");
        }
        options.ConnectTimeout = (int)settings.RedisConnectTimeout.TotalMilliseconds;
        options.AbortOnConnectFail = true;
        try
        {
            using var probe = ConnectionMultiplexer.Connect(options.Clone());
            probe.GetDatabase().Ping();
        }
        catch (RedisException e)
        {
            // StackExchange's message goes on to advise abortConnect, which does not apply to a check made at start.
            throw new InvalidOperationException($"Cluster:Redis: cannot reach Redis at '{settings.Redis}' ({e.Message.Split('.')[0]}). " +
                "Start redis-server there, or set Cluster:Provider=localhost for a single machine.");
        }
        // Once running, a Redis restart is ridden out by reconnecting rather than failing the silo.
        options.AbortOnConnectFail = false;
        return options;
    }
}
