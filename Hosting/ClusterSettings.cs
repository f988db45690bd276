using System.Net;
using Microsoft.Extensions.Configuration;

namespace OrleansGpt.Hosting;

/// <summary>
/// How this process finds the rest of the cluster (configuration section "Cluster"), the same for silos and clients.
/// </summary>
/// <remarks>
/// <c>localhost</c> (the default) needs nothing else: one silo on this machine, or several with their own ports
/// pointing at the primary's, grain state in memory. <c>redis</c> keeps membership and grain state (sessions,
/// fine-tunes, the checkpoint registry) in the Redis server that <see cref="Redis"/> names, so silos on several
/// machines form one cluster and state outlives any silo. Membership timing is the "Cluster:Membership" section,
/// bound onto Orleans' ClusterMembershipOptions (deploy/README.md lists the values tests and production use).
/// </remarks>
public sealed class ClusterSettings
{
    public const string SectionName = "Cluster";

    /// <summary>localhost or redis.</summary>
    public string Provider { get; set; } = "localhost";

    /// <summary>A StackExchange.Redis connection string ("redis-1:6379,password=..."), required with the redis provider.</summary>
    public string? Redis { get; set; }

    /// <summary>The Orleans cluster id: silos and clients with the same id (and Redis) form one cluster.</summary>
    public string ClusterId { get; set; } = "orleansgpt";

    /// <summary>The Orleans service id: grain state is keyed by it, so it stays the same across deployments.</summary>
    public string ServiceId { get; set; } = "orleansgpt";

    /// <summary>Silo-to-silo port.</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>Where Orleans clients connect.</summary>
    public int GatewayPort { get; set; } = 30000;

    /// <summary>localhost provider: the primary silo's port when this silo is not the primary; empty for the primary.</summary>
    public int? PrimarySiloPort { get; set; }

    /// <summary>redis provider: the address other silos and clients reach this silo at; empty: this machine's first
    /// non-loopback address, as Orleans picks it. Tests on one machine use 127.0.0.1.</summary>
    public string? AdvertisedAddress { get; set; }

    /// <summary>Running in Kubernetes: the silo takes its name, address and cluster id from the pod
    /// (Microsoft.Orleans.Hosting.Kubernetes) and removes silos whose pods are gone.</summary>
    public bool Kubernetes { get; set; }

    /// <summary>
    /// Clients only: the gateways to use ("10.0.0.5:30000"), instead of every gateway the membership table lists.
    /// A client's calls travel through its gateway, so a gateway that dies breaks the streams passing through it
    /// (with the same retriable error as a lost replica); pinning clients to gateways on machines that serve no
    /// model keeps a model host's failure from touching streams it does not serve.
    /// </summary>
    public List<string> Gateways { get; set; } = [];

    /// <summary>
    /// Mutual TLS between silos and clients: a PKCS#12 (.pfx) file holding this process's certificate and private key.
    /// Orleans' silo and gateway ports have no authentication of their own (any process that reaches a gateway may
    /// call any grain, promotions included); with this set every connection must present a certificate the cluster
    /// trusts (see <see cref="TlsAuthority"/>), and carries encrypted traffic. Empty: plain TCP, for a private network.
    /// </summary>
    public string? TlsCertificate { get; set; }

    /// <summary>The password of <see cref="TlsCertificate"/>, if it has one (from a secret, not a committed file).</summary>
    public string? TlsCertificatePassword { get; set; }

    /// <summary>A CA certificate (PEM or DER) that peers' certificates must be issued by. Empty: peers must present
    /// the very certificate this process has (one cluster certificate shared by every silo and client).</summary>
    public string? TlsAuthority { get; set; }

    /// <summary>How long to wait for Redis before giving up at start.</summary>
    public TimeSpan RedisConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    public bool UsesRedis => Provider == "redis";

    /// <summary>Reads and checks the section; a setting that does not fit throws naming it, before anything starts.</summary>
    public static ClusterSettings From(IConfiguration configuration)
    {
        var settings = configuration.GetSection(SectionName).Get<ClusterSettings>() ?? new ClusterSettings();
        settings.Provider = settings.Provider.Trim().ToLowerInvariant();
        if (settings.Provider is not ("localhost" or "redis"))
            throw new ArgumentException($"Cluster:Provider must be localhost or redis, not '{settings.Provider}'");
        if (settings.UsesRedis && string.IsNullOrWhiteSpace(settings.Redis))
            throw new ArgumentException("Cluster:Redis is required with Cluster:Provider=redis: a StackExchange.Redis connection string such as 127.0.0.1:6379");
        foreach (var (name, port) in new[] { ("SiloPort", (int?)settings.SiloPort), ("GatewayPort", settings.GatewayPort), ("PrimarySiloPort", settings.PrimarySiloPort) })
            if (port is < 1 or > 65535)
                throw new ArgumentException($"Cluster:{name} must be a TCP port (1-65535), not {port}");
        if (settings.AdvertisedAddress is { Length: > 0 } address && !IPAddress.TryParse(address, out _))
            throw new ArgumentException($"Cluster:AdvertisedAddress must be an IP address, not '{address}'");
        foreach (string gateway in settings.Gateways)
            if (!IPEndPoint.TryParse(gateway, out var endpoint) || endpoint.Port == 0)
                throw new ArgumentException($"Cluster:Gateways entry '{gateway}' is not an IP address and port such as 127.0.0.1:30000");
        if (settings.TlsCertificate is { Length: > 0 } certificate && !File.Exists(certificate))
            throw new ArgumentException($"Cluster:TlsCertificate '{certificate}' does not exist: give a .pfx file with the certificate and its private key");
        if (settings.TlsAuthority is { Length: > 0 } authority && !File.Exists(authority))
            throw new ArgumentException($"Cluster:TlsAuthority '{authority}' does not exist: give the CA certificate (PEM or DER) that issued the cluster's certificates");
        if (string.IsNullOrWhiteSpace(settings.ClusterId) || string.IsNullOrWhiteSpace(settings.ServiceId))
            throw new ArgumentException("Cluster:ClusterId and Cluster:ServiceId must not be empty");
        return settings;
    }

    /// <summary>The primary silo's endpoint (localhost provider), or null when this silo is the primary.</summary>
    public IPEndPoint? PrimarySilo => PrimarySiloPort is int port ? new IPEndPoint(IPAddress.Loopback, port) : null;
}
