using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Microsoft.Extensions.Configuration;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using OrleansGpt.Client;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Hosting;
using OrleansGpt.Silo.Api;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Cluster;

/// <summary>
/// What a silo exposes beyond its HTTP API: the Orleans gateway (closed to processes without a certificate the
/// cluster trusts when Cluster:TlsCertificate is set) and the Orleans Dashboard (local callers only, or off).
/// </summary>
public sealed class ExposureTests
{
    [Fact]
    public async Task WithTlsOnlyProcessesHoldingATrustedCertificateReachTheGatewayAndTheDashboardAnswersOnlyLocally()
    {
        using var temp = TestModels.TempDir();
        using var authority = Authority("OrleansGpt test CA");
        string silo = Issue(authority, "silo", temp.Sub("silo.pfx"));
        string client = Issue(authority, "client", temp.Sub("client.pfx"));
        string stranger = SelfSigned("stranger", temp.Sub("stranger.pfx"));
        string ca = temp.Sub("ca.crt");
        File.WriteAllText(ca, authority.ExportCertificatePem());
        using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed: 3))
            Gpt2Checkpoint.Save(model, temp.Sub("checkpoints/tiny"), new ModelProvenance("untrained", "exposure test"));

        var settings = new Dictionary<string, string>
        {
            ["Cluster:TlsCertificate"] = silo,
            ["Cluster:TlsCertificatePassword"] = "pw",
            ["Cluster:TlsAuthority"] = ca,
            ["ModelHost:CheckpointDirectory"] = temp.Sub("checkpoints"),
            ["ModelHost:Precision"] = "fp32",
            ["Logging:LogLevel:Default"] = "Warning",
        };
        await using var process = new SiloProcess("tls", settings, temp.Path);
        process.Start();
        await process.WaitHealthyAsync(TimeSpan.FromMinutes(2));

        // A client with a certificate from the cluster's authority calls grains as usual.
        await using (var trusted = await ConnectAsync(process, client, ca))
            Assert.Contains(await trusted.Cluster.GetGrain<IModelRouterGrain>(0).GetReplicasAsync(), r => r.Size == "tiny");
        // At the TLS level: the gateway completes a handshake with that certificate, and refuses one without a client
        // certificate or with one the cluster did not issue. (An Orleans client refused this way keeps retrying.)
        Assert.True(await GatewayAcceptsAsync(process.GatewayPort, client));
        Assert.False(await GatewayAcceptsAsync(process.GatewayPort, null));
        Assert.False(await GatewayAcceptsAsync(process.GatewayPort, stranger));
        Assert.False(await GatewayAcceptsAsync(process.SiloPort, stranger)); // the silo-to-silo port alike

        // The dashboard answers on this machine (the test's connection comes from 127.0.0.1).
        Assert.Equal(HttpStatusCode.OK, (await process.Http.GetAsync("/dashboard")).StatusCode);
    }

    [Fact]
    public void TheDashboardAnswersLocalCallersAndCallersWithTheKeyOnly()
    {
        foreach (var local in new[] { IPAddress.Loopback, IPAddress.IPv6Loopback, IPAddress.Loopback.MapToIPv6() })
            Assert.Null(OperatorApi.CheckDashboard("", local, null));
        var remote = IPAddress.Parse("192.0.2.7");
        Assert.Equal(403, OperatorApi.CheckDashboard("", remote, null)?.Status);
        Assert.Equal(403, OperatorApi.CheckDashboard("", remote, "Bearer anything")?.Status);
        Assert.Equal(403, OperatorApi.CheckDashboard("k3y", remote, "Bearer wrong")?.Status);
        Assert.Null(OperatorApi.CheckDashboard("k3y", remote, "Bearer k3y"));
        Assert.Contains("port-forward", OperatorApi.CheckDashboard("", null, null)!.Value.Message);
    }

    [Fact]
    public void WithoutAnAuthorityOnlyTheClustersOwnCertificateIsTrusted()
    {
        using var temp = TestModels.TempDir();
        using var own = X509CertificateLoader.LoadPkcs12FromFile(SelfSigned("cluster", temp.Sub("own.pfx")), "pw");
        using var other = X509CertificateLoader.LoadPkcs12FromFile(SelfSigned("cluster", temp.Sub("other.pfx")), "pw"); // same name, other key
        using var authority = Authority("ca");
        using var issued = X509CertificateLoader.LoadPkcs12FromFile(Issue(authority, "silo", temp.Sub("issued.pfx")), "pw");
        using var caOnly = X509CertificateLoader.LoadCertificate(authority.Export(X509ContentType.Cert));

        Assert.True(ClusterHostingExtensions.IsTrustedPeer(own, own, null));
        Assert.False(ClusterHostingExtensions.IsTrustedPeer(other, own, null));
        Assert.False(ClusterHostingExtensions.IsTrustedPeer(null, own, null));
        Assert.True(ClusterHostingExtensions.IsTrustedPeer(issued, own, caOnly));
        Assert.False(ClusterHostingExtensions.IsTrustedPeer(other, own, caOnly));
        // A setting naming a missing file stops the process at start, naming the setting.
        var missing = Assert.Throws<ArgumentException>(() => ClusterSettings.From(new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["Cluster:TlsCertificate"] = temp.Sub("absent.pfx") }).Build()));
        Assert.Contains("Cluster:TlsCertificate", missing.Message);
    }

    private static Task<ClusterConnection> ConnectAsync(SiloProcess silo, string? certificate, string? authority)
    {
        var settings = new Dictionary<string, string?> { ["Cluster:GatewayPort"] = silo.GatewayPort.ToString() };
        if (certificate is not null)
            (settings["Cluster:TlsCertificate"], settings["Cluster:TlsCertificatePassword"], settings["Cluster:TlsAuthority"]) = (certificate, "pw", authority);
        return ClusterConnection.ConnectAsync(settings);
    }

    /// <summary>Whether the silo's port keeps a TLS connection open for a client presenting <paramref name="certificate"/>.</summary>
    private static async Task<bool> GatewayAcceptsAsync(int port, string? certificate)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        using var ssl = new SslStream(tcp.GetStream());
        using var presented = certificate is null ? null : X509CertificateLoader.LoadPkcs12FromFile(certificate, "pw");
        var options = new SslClientAuthenticationOptions { TargetHost = "silo", RemoteCertificateValidationCallback = (_, _, _, _) => true };
        if (presented is not null)
            options.ClientCertificates = [presented];
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await ssl.AuthenticateAsClientAsync(options, timeout.Token);
            // With TLS 1.3 the server judges the client's certificate after the client's side of the handshake is done:
            // a refusal arrives as an alert (or a closed connection) on the first read; an accepted connection stays
            // open, waiting for Orleans' own preamble.
            using var quiet = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            return await ssl.ReadAsync(new byte[1], quiet.Token) > 0;
        }
        catch (OperationCanceledException)
        {
            return true;
        }
        catch (Exception e) when (e is IOException or AuthenticationException)
        {
            return false;
        }
    }

    private static X509Certificate2 Authority(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: false, 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(2)); // outlives what it issues
    }

    /// <summary>A certificate for TLS client and server use issued by <paramref name="authority"/>, written as a .pfx (password "pw").</summary>
    private static string Issue(X509Certificate2 authority, string name, string path)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = Leaf(name, key);
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(authority, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var serial = RandomNumberGenerator.GetBytes(8);
        serial[0] = (byte)((serial[0] & 0x7F) | 0x01); // positive, with no leading zero byte, as X.509 serials must be
        using var issued = request.Create(authority, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(1), serial);
        using var withKey = issued.CopyWithPrivateKey(key);
        File.WriteAllBytes(path, withKey.Export(X509ContentType.Pfx, "pw"));
        return path;
    }

    private static string SelfSigned(string name, string path)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var certificate = Leaf(name, key).CreateSelfSigned(DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(1));
        File.WriteAllBytes(path, certificate.Export(X509ContentType.Pfx, "pw"));
        return path;
    }

    private static CertificateRequest Leaf(string name, ECDsa key)
    {
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], critical: false));
        return request;
    }
}
