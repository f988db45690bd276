using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using Orleans.Configuration;
using OrleansGpt.Grains;
using OrleansGpt.Hosting;
using OrleansGpt.Silo.Api;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;

namespace OrleansGpt.Tests.Grains;

/// <summary>
/// deploy/ cannot run here (no Docker, no Kubernetes), so its files are read and checked against what the silo
/// really reads: every setting they pass names a real option, and the values that must agree (ports, Redis address,
/// node names, probes, labels) do.
/// </summary>
public sealed partial class DeployFilesTests
{
    private static readonly string s_deploy = Path.Combine(TestData.RepositoryRoot, "deploy");

    [Fact]
    public void TheComposeFileRunsRedisAndThreeSilosThatAgreeWithTheSilosSettings()
    {
        var compose = Load(Path.Combine(s_deploy, "compose.yaml")).Single();
        var services = Map(compose["services"]);
        var silos = services.Where(s => s.Key.StartsWith("silo-", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, silos.Count);
        var nodes = new List<string>();
        foreach (var (name, value) in silos)
        {
            var service = Map(value);
            var env = Map(service["environment"]).ToDictionary(e => e.Key, e => e.Value?.ToString() ?? "");
            AssertKnownSettings(env.Keys, name);
            Assert.Equal("redis", env["Cluster__Provider"]);
            var (host, port) = HostPort(env["Cluster__Redis"]);
            Assert.True(services.ContainsKey(host), $"{name}: Cluster__Redis names '{host}', which is not a service");
            Assert.Equal(6379, port);
            nodes.Add(env["ModelHost__Node"]);
            int http = HostPort(env["Urls"].Replace("http://", "")).Port;
            var published = List(service["ports"]).Select(p => p!.ToString()!.Split(':')).ToList();
            Assert.Contains(published, p => int.Parse(p[1]) == http);
            Assert.Contains(published, p => p[1] == env["Cluster__GatewayPort"]);
            Assert.Contains("/healthz", string.Join(" ", List(Map(service["healthcheck"])["test"])));
            Assert.Equal(Map(compose["volumes"]).Keys.Order(), List(service["volumes"]).Select(v => v!.ToString()!.Split(':')[0]).Where(v => !v.StartsWith('.')).Order().Prepend("redis-data").Order());
        }
        Assert.Equal(nodes.Distinct(), nodes);
        Assert.Contains(silos, s => Map(Map(s.Value)["environment"]).ContainsKey("ModelHost__TrainingDevices__0"));
    }

    [Fact]
    public void TheKubernetesManifestsPlaceGpuSilosJoinedThroughRedisWithAReadinessProbe()
    {
        var documents = Directory.GetFiles(Path.Combine(s_deploy, "kubernetes"), "*.yaml").SelectMany(Load).ToList();
        var redisService = documents.Single(d => Kind(d) == "Service" && Name(d) == "orleansgpt-redis");
        var silo = documents.Single(d => Kind(d) == "Deployment" && Name(d) == "orleansgpt-silo");
        var pod = Map(Map(silo["spec"])["template"]);
        var podSpec = Map(pod["spec"]);
        var container = Map(List(podSpec["containers"]).Single());
        var env = List(container["env"]).Select(Map).ToDictionary(e => e["name"]!.ToString()!, e => e.TryGetValue("value", out var v) ? v?.ToString() : null);
        AssertKnownSettings(env.Keys, "silo.yaml");

        Assert.Equal(("redis", "true"), (env["Cluster__Provider"], env["Cluster__Kubernetes"]));
        var (host, port) = HostPort(env["Cluster__Redis"]!);
        Assert.Equal((Name(redisService), port), (host, Convert.ToInt32(Map(List(Map(redisService["spec"])["ports"]).Single())["port"])));
        // Orleans' Kubernetes hosting finds its silos by these labels, and reads the pod's identity from these variables.
        var labels = Map(Map(pod["metadata"])["labels"]);
        Assert.Equal((env["Cluster__ServiceId"], env["Cluster__ClusterId"]), (labels["orleans/serviceId"]?.ToString(), labels["orleans/clusterId"]?.ToString()));
        Assert.Subset(env.Keys.ToHashSet(), new HashSet<string> { "POD_NAME", "POD_NAMESPACE", "POD_IP" });
        Assert.Contains(documents, d => Kind(d) == "Role" && List(d["rules"]).Select(Map).Any(r => List(r["resources"]).Contains("pods") && List(r["verbs"]).Contains("delete")));

        var ports = List(container["ports"]).Select(Map).ToDictionary(p => p["name"]!.ToString()!, p => p["containerPort"]!.ToString());
        Assert.Equal((env["Cluster__SiloPort"], env["Cluster__GatewayPort"]), (ports["silo"], ports["gateway"]));
        Assert.Equal(ports["http"], HostPort(env["Urls"]!.Replace("http://", "")).Port.ToString());
        var probe = Map(Map(container["readinessProbe"])["httpGet"]);
        Assert.Equal(("/healthz", "http"), (probe["path"]?.ToString(), probe["port"]?.ToString()));

        // On GPU nodes, one GPU each, serving a replica on a device the silo owns.
        Assert.NotEmpty(Map(podSpec["nodeSelector"]));
        Assert.Equal("1", Map(Map(container["resources"])["limits"])["nvidia.com/gpu"]?.ToString());
        string device = env["ModelHost__Devices__0"]!;
        Assert.StartsWith("cuda:", device);
        Assert.EndsWith("@" + device, env["ModelHost__Replicas__0"]);
        Assert.Contains(documents, d => Kind(d) == "PersistentVolumeClaim" && List(Map(d["spec"])["accessModes"]).Contains("ReadWriteMany"));
    }

    [Fact]
    public void TheLocalClusterScriptParsesAndPassesOnlyRealSettings()
    {
        string script = Path.Combine(s_deploy, "local-cluster.sh");
        using var bash = Process.Start(new ProcessStartInfo("bash", ["-n", script]) { RedirectStandardError = true })!;
        bash.WaitForExit();
        Assert.True(bash.ExitCode == 0, bash.StandardError.ReadToEnd());
        var settings = SettingArgument().Matches(File.ReadAllText(script)).Select(m => m.Groups[1].Value.Replace(':', '_').Replace("_", "__")).ToList();
        Assert.Contains("Cluster__Redis", settings);
        AssertKnownSettings(settings, "local-cluster.sh");
    }

    [Theory]
    [InlineData("Silo/appsettings.json")]
    [InlineData("deploy/gpu-node.appsettings.json")]
    public void SettingsFilesNameOnlyRealSettings(string file)
    {
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(s_deploy, "..", file)));
        var names = new List<string>();
        void Flatten(System.Text.Json.JsonElement e, string prefix)
        {
            if (e.ValueKind == System.Text.Json.JsonValueKind.Object)
                foreach (var p in e.EnumerateObject())
                    Flatten(p.Value, prefix.Length == 0 ? p.Name : $"{prefix}__{p.Name}");
            else if (e.ValueKind != System.Text.Json.JsonValueKind.Array || e.GetArrayLength() == 0)
                names.Add(prefix);
            else
                names.Add(prefix + "__0");
        }
        Flatten(json.RootElement, "");
        Assert.Contains("ModelHost__Retention__Versions", names);
        AssertKnownSettings(names.Where(n => !n.StartsWith("Logging__", StringComparison.Ordinal)), file);
    }

    /// <summary>Every "Section__Key[__N]" names a property of the options type the silo binds that section to.</summary>
    private static void AssertKnownSettings(IEnumerable<string> names, string where)
    {
        var sections = new Dictionary<string, Type>
        {
            ["Cluster"] = typeof(ClusterSettings),
            ["Cluster__Membership"] = typeof(ClusterMembershipOptions),
            ["ModelHost"] = typeof(ModelHostOptions),
            ["ModelHost__Retention"] = typeof(RetentionOptions),
            ["Operator"] = typeof(OperatorOptions),
            ["Api"] = typeof(ApiOptions),
            ["Evaluation"] = typeof(EvaluationOptions),
        };
        foreach (string name in names.Where(n => n.Contains("__", StringComparison.Ordinal)))
        {
            var parts = name.Split("__").Where(p => !p.All(char.IsAsciiDigit)).ToArray();
            string section = string.Join("__", parts[..^1]);
            Assert.True(sections.TryGetValue(section, out var type), $"{where}: {name} is in no section the silo reads");
            Assert.True(type!.GetProperty(parts[^1], BindingFlags.Public | BindingFlags.Instance) is { CanWrite: true }, $"{where}: {name} is not a setting of {type.Name}");
        }
        foreach (string name in names.Where(n => !n.Contains("__", StringComparison.Ordinal)))
            Assert.True(name is "Urls" || name.StartsWith("POD_", StringComparison.Ordinal), $"{where}: {name} is not a setting the silo reads");
    }

    private static List<Dictionary<object, object?>> Load(string path)
    {
        var deserializer = new DeserializerBuilder().Build();
        using var reader = new StringReader(File.ReadAllText(path));
        var parser = new MergingParser(new Parser(reader));
        parser.Consume<StreamStart>();
        var documents = new List<Dictionary<object, object?>>();
        while (parser.Accept<DocumentStart>(out _))
            documents.Add(deserializer.Deserialize<Dictionary<object, object?>>(parser));
        return documents;
    }

    private static Dictionary<string, object?> Map(object? node) =>
        ((Dictionary<object, object?>)node!).ToDictionary(e => e.Key.ToString()!, e => e.Value);

    private static List<object?> List(object? node) => (List<object?>)node!;

    private static string? Kind(Dictionary<object, object?> d) => d.GetValueOrDefault("kind")?.ToString();

    private static string? Name(Dictionary<object, object?> d) => Map(d["metadata"])["name"]?.ToString();

    private static (string Host, int Port) HostPort(string text)
    {
        int colon = text.LastIndexOf(':');
        return (text[..colon], int.Parse(text[(colon + 1)..]));
    }

    [GeneratedRegex(@"--((?:Cluster|ModelHost|Operator)(?::[A-Za-z0-9]+)+)=")]
    private static partial Regex SettingArgument();
}
