using Microsoft.Extensions.Configuration;
using OrleansGpt.Grains;
using OrleansGpt.Grains.Placement;

namespace OrleansGpt.Tests.Grains;

public sealed class DeviceInventoryTests
{
    [Theory]
    [InlineData("small@cpu:0", "small", null, "cpu:0")]
    [InlineData("small@cpu", "small", null, "cpu:0")]
    [InlineData("tiny@gpu-1/cuda:1", "tiny", "gpu-1", "cuda:1")]
    [InlineData("my.size_2@node.a/cuda", "my.size_2", "node.a", "cuda:0")]
    public void KeysParseToSizeNodeAndDevice(string key, string size, string? node, string device)
    {
        Assert.Equal(new ModelKey(size, node, device), ModelKey.Parse(key));
        Assert.Equal(node is null ? $"{size}@{device}" : $"{size}@{node}/{device}", ModelKey.Parse(key).ToString());
    }

    [Theory]
    [InlineData("small")]
    [InlineData("small@")]
    [InlineData("@cpu:0")]
    [InlineData("small@a/b/cpu:0")]
    public void MalformedKeysAreRefused(string key) =>
        Assert.Contains("size@device", Assert.Throws<ArgumentException>(() => ModelKey.Parse(key)).Message);

    [Fact]
    public void OnlyCpuAndCudaAreDevices() =>
        Assert.Contains("'tpu:0' is not a device", Assert.Throws<ArgumentException>(() => ModelKey.Parse("small@tpu:0")).Message);

    [Fact]
    public void WithoutReplicasConfiguredEveryCheckpointIsServedOnTheFirstDevice()
    {
        var inventory = DeviceInventory.Create(new ModelHostOptions { Node = "n", ShareDevices = true }, ["small", "tiny"]);
        Assert.Equal(["cpu:0"], inventory.Devices);
        Assert.Equal(["small@n/cpu:0", "tiny@n/cpu:0"], inventory.Replicas.Select(r => r.ToString()));
        // What other silos read back from this silo's metadata.
        var back = DeviceInventory.FromMetadata(inventory.ToMetadata())!;
        Assert.Equal((inventory.Node, inventory.ShareDevices), (back.Node, back.ShareDevices));
        Assert.Equal(inventory.Devices, back.Devices);
        Assert.Equal(inventory.Replicas, back.Replicas);
        Assert.Null(DeviceInventory.FromMetadata(new Dictionary<string, string>()));
        Assert.True(inventory.Owns(ModelKey.Parse("tiny@cpu:0")));
        Assert.False(inventory.Owns(ModelKey.Parse("tiny@other/cpu:0")));
        Assert.False(inventory.Owns(ModelKey.Parse("tiny@cuda:0")));
    }

    [Fact]
    public void InventoriesThatDoNotFitAreRefusedNamingTheSetting()
    {
        Assert.Contains("would share cpu:0", Assert.Throws<ArgumentException>(() =>
            DeviceInventory.Create(new ModelHostOptions { Node = "n" }, ["small", "tiny"])).Message);
        Assert.Contains("not in ModelHost:Devices", Assert.Throws<ArgumentException>(() =>
            DeviceInventory.Create(new ModelHostOptions { Node = "n", Replicas = ["small@cuda:0"] }, [])).Message);
        Assert.Contains("names node 'm'", Assert.Throws<ArgumentException>(() =>
            DeviceInventory.Create(new ModelHostOptions { Node = "n", Replicas = ["small@m/cpu:0"] }, [])).Message);
        Assert.Contains("lists a device twice", Assert.Throws<ArgumentException>(() =>
            DeviceInventory.Create(new ModelHostOptions { Node = "n", Devices = ["cpu", "cpu:0"] }, [])).Message);
        Assert.Contains("not a valid node name", Assert.Throws<ArgumentException>(() =>
            DeviceInventory.Create(new ModelHostOptions { Node = "a/b" }, [])).Message);
    }

    [Fact]
    public void TheGpuNodeExampleInDeployIsAValidInventory()
    {
        string path = Path.Combine(TestData.RepositoryRoot, "deploy", "gpu-node.appsettings.json");
        var options = new ConfigurationBuilder().AddJsonFile(path).Build().GetSection("ModelHost").Get<ModelHostOptions>()!;
        var inventory = DeviceInventory.Create(options, []);
        Assert.Equal(["small@gpu-1/cuda:0", "small@gpu-1/cuda:1"], inventory.Replicas.Select(r => r.ToString()));
        Assert.False(inventory.ShareDevices);
    }
}
