using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Cluster;

/// <summary>Settings a silo checks before it joins a cluster: a wrong one stops it, saying what it may be.</summary>
public sealed class SiloSettingsTests
{
    [Fact]
    public async Task AnUnknownDecodeKernelStopsTheSiloAtStartSayingWhatItMayBe()
    {
        using var temp = TestModels.TempDir();
        using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed: 5))
            Gpt2Checkpoint.Save(model, temp.Sub("checkpoints/tiny"), new ModelProvenance("untrained", "settings test"));
        var settings = new Dictionary<string, string>
        {
            ["ModelHost:CheckpointDirectory"] = temp.Sub("checkpoints"),
            ["ModelHost:Precision"] = "fp32",
            ["ModelHost:DecodeKernel"] = "gpu",
        };
        await using var silo = new SiloProcess("settings", settings, temp.Path);
        silo.Start();
        // Without the check the silo would serve the tiny model and this would return instead of throwing.
        var stopped = await Assert.ThrowsAsync<InvalidOperationException>(() => silo.WaitHealthyAsync(TimeSpan.FromMinutes(2)));
        Assert.Contains("ModelHost:DecodeKernel must be own or torch", stopped.Message);
    }
}
