namespace OrleansGpt.Grains.Placement;

/// <summary>
/// What one silo serves from: its node name, the devices it owns, whether two models may share a device, and the
/// replicas ("size@node/device") it hosts. Every silo publishes its inventory in its Orleans silo metadata, which
/// is how the placement director and the router on any silo know what the others own.
/// </summary>
public sealed record DeviceInventory(string Node, IReadOnlyList<string> Devices, bool ShareDevices, IReadOnlyList<ModelKey> Replicas)
{
    /// <summary>The devices fine-tuning may use on this silo (ModelHost:TrainingDevices); empty: it does not train.</summary>
    public IReadOnlyList<string> TrainingDevices { get; init; } = [];

    private const string NodeKey = "orleansgpt.node";
    private const string DevicesKey = "orleansgpt.devices";
    private const string ShareKey = "orleansgpt.share-devices";
    private const string ReplicasKey = "orleansgpt.replicas";
    private const string TrainingKey = "orleansgpt.training-devices";

    /// <summary>
    /// The inventory <paramref name="options"/> describe. With no devices configured a silo owns cpu:0; with no
    /// replicas configured it serves every size in <paramref name="checkpointSizes"/> on its first device. Throws
    /// ArgumentException naming the setting for a device or replica that does not fit, and for two replicas on one
    /// device unless ShareDevices allows it.
    /// </summary>
    public static DeviceInventory Create(ModelHostOptions options, IReadOnlyList<string> checkpointSizes)
    {
        string node = ModelKey.ValidateNode(string.IsNullOrEmpty(options.Node) ? DefaultNode() : options.Node);
        List<string> devices = options.Devices.Count == 0 ? ["cpu:0"] : [.. options.Devices.Select(ModelKey.NormalizeDevice)];
        if (devices.Distinct().Count() != devices.Count)
            throw new ArgumentException($"ModelHost:Devices lists a device twice: {string.Join(", ", devices)}");

        var replicas = options.Replicas.Count == 0
            ? checkpointSizes.Select(size => new ModelKey(size, node, devices[0])).ToList()
            : options.Replicas.Select(r => ParseReplica(r, node, devices)).ToList();
        if (replicas.Distinct().Count() != replicas.Count)
            throw new ArgumentException($"ModelHost:Replicas lists a replica twice: {string.Join(", ", replicas)}");
        if (!options.ShareDevices)
        {
            var shared = replicas.GroupBy(r => r.Device).FirstOrDefault(g => g.Count() > 1);
            if (shared is not null)
                throw new ArgumentException($"{string.Join(" and ", shared)} would share {shared.Key}: give each replica its own device in " +
                    "ModelHost:Replicas, or set ModelHost:ShareDevices to true to let one device serve several models");
        }
        List<string> training = [.. options.TrainingDevices.Select(ModelKey.NormalizeDevice)];
        if (training.FirstOrDefault(d => !devices.Contains(d)) is { } unknown)
            throw new ArgumentException($"ModelHost:TrainingDevices lists {unknown}, which is not in ModelHost:Devices ({string.Join(", ", devices)})");
        return new DeviceInventory(node, devices, options.ShareDevices, replicas) { TrainingDevices = training };
    }

    /// <summary>Whether this silo owns the device <paramref name="key"/> names (and the node, when it names one).</summary>
    public bool Owns(ModelKey key) => (key.Node is null || key.Node == Node) && Devices.Contains(key.Device);

    /// <summary>The inventory as silo metadata entries.</summary>
    public Dictionary<string, string> ToMetadata() => new()
    {
        [NodeKey] = Node,
        [DevicesKey] = string.Join(',', Devices),
        [ShareKey] = ShareDevices ? "true" : "false",
        [ReplicasKey] = string.Join(',', Replicas),
        [TrainingKey] = string.Join(',', TrainingDevices),
    };

    /// <summary>A silo's inventory from its metadata; null for a silo that publishes none (not a model host, or its
    /// metadata has not reached this silo yet).</summary>
    public static DeviceInventory? FromMetadata(IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(NodeKey, out var node) || !metadata.TryGetValue(DevicesKey, out var devices))
            return null;
        static string[] List(string? text) => text?.Split(',', StringSplitOptions.RemoveEmptyEntries) ?? [];
        return new DeviceInventory(node, List(devices), metadata.GetValueOrDefault(ShareKey) == "true",
            [.. List(metadata.GetValueOrDefault(ReplicasKey)).Select(ModelKey.Parse)])
        {
            TrainingDevices = List(metadata.GetValueOrDefault(TrainingKey)),
        };
    }

    /// <summary>The machine's name: unique per machine, stable across restarts (two silos on one machine set ModelHost:Node).</summary>
    private static string DefaultNode() =>
        new([.. Environment.MachineName.ToLowerInvariant().Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '-')]);

    private static ModelKey ParseReplica(string text, string node, List<string> devices)
    {
        var key = ModelKey.Parse(text);
        if (key.Node is not null && key.Node != node)
            throw new ArgumentException($"ModelHost:Replicas entry '{text}' names node '{key.Node}', but this silo is '{node}'");
        if (!devices.Contains(key.Device))
            throw new ArgumentException($"ModelHost:Replicas entry '{text}' uses {key.Device}, which is not in ModelHost:Devices ({string.Join(", ", devices)})");
        return key.On(node);
    }
}
