using System.Text.RegularExpressions;

namespace OrleansGpt.Grains.Placement;

/// <summary>
/// A model grain's key: a checkpoint size on a device, "size@node/device" ("small@gpu-1/cuda:0") or, without
/// the node, "size@device" for that device on whichever silo owns one. Devices are libtorch's names, cpu:N or
/// cuda:N ("cpu" and "cuda" mean index 0).
/// </summary>
public readonly partial record struct ModelKey(string Size, string? Node, string Device)
{
    /// <summary>Parses a grain key; a malformed one throws ArgumentException saying what the form is.</summary>
    public static ModelKey Parse(string key)
    {
        var match = KeyPattern().Match(key);
        if (!match.Success)
            throw new ArgumentException($"Model grain key '{key}' is not of the form size@device or size@node/device (e.g. small@cpu:0, small@gpu-1/cuda:0)");
        string? node = match.Groups["node"].Success ? match.Groups["node"].Value : null;
        return new ModelKey(match.Groups["size"].Value, node, NormalizeDevice(match.Groups["device"].Value));
    }

    /// <summary>"cpu" -> "cpu:0"; throws ArgumentException for anything but cpu[:N] or cuda[:N].</summary>
    public static string NormalizeDevice(string device)
    {
        var match = DevicePattern().Match(device);
        if (!match.Success)
            throw new ArgumentException($"'{device}' is not a device: expected cpu, cpu:N, cuda or cuda:N");
        return $"{match.Groups["kind"].Value}:{(match.Groups["index"].Success ? match.Groups["index"].Value : "0")}";
    }

    /// <summary>Checks a node name (the part before "/" in a key).</summary>
    public static string ValidateNode(string node) => NodePattern().IsMatch(node)
        ? node
        : throw new ArgumentException($"'{node}' is not a valid node name: use letters, digits, '.', '_' and '-'");

    /// <summary>This key with its node filled in.</summary>
    public ModelKey On(string node) => this with { Node = node };

    public override string ToString() => Node is null ? $"{Size}@{Device}" : $"{Size}@{Node}/{Device}";

    [GeneratedRegex(@"^(?<size>[A-Za-z0-9._-]+)@(?:(?<node>[A-Za-z0-9._-]+)/)?(?<device>[a-z]+(?::\d+)?)$")]
    private static partial Regex KeyPattern();

    [GeneratedRegex(@"^(?<kind>cpu|cuda)(?::(?<index>\d+))?$")]
    private static partial Regex DevicePattern();

    [GeneratedRegex(@"^[A-Za-z0-9._-]+$")]
    private static partial Regex NodePattern();
}
