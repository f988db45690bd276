using System.Net;

namespace OrleansGpt.Silo;

/// <summary>
/// Where this silo listens on localhost (appsettings section "Cluster"). The first silo of a machine takes the
/// defaults and is the primary; another silo on the same machine takes other ports and points at the primary,
/// e.g. --Cluster:SiloPort=11112 --Cluster:GatewayPort=30001 --Cluster:PrimarySiloPort=11111.
/// </summary>
public sealed class LocalClusterOptions
{
    public int SiloPort { get; set; } = 11111;

    /// <summary>Where Orleans clients connect (the Client project uses 30000).</summary>
    public int GatewayPort { get; set; } = 30000;

    /// <summary>The primary silo's port when this silo is not the primary; empty for the primary itself.</summary>
    public int? PrimarySiloPort { get; set; }

    /// <summary>Reads and checks the section; a bad port stops the silo before it starts.</summary>
    public static LocalClusterOptions From(IConfiguration configuration)
    {
        var options = configuration.GetSection("Cluster").Get<LocalClusterOptions>() ?? new LocalClusterOptions();
        foreach (var (name, port) in new[] { ("SiloPort", (int?)options.SiloPort), ("GatewayPort", options.GatewayPort), ("PrimarySiloPort", options.PrimarySiloPort) })
            if (port is < 1 or > 65535)
                throw new ArgumentOutOfRangeException(nameof(configuration), port, $"Cluster:{name} must be a TCP port (1-65535)");
        return options;
    }

    /// <summary>The primary silo's endpoint, or null when this silo is the primary.</summary>
    public IPEndPoint? PrimarySilo => PrimarySiloPort is int port ? new IPEndPoint(IPAddress.Loopback, port) : null;
}
