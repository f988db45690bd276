using static OrleansGpt.Tests.Cli.TrainingCli;

namespace OrleansGpt.Tests.Cli;

/// <summary>The benchmarks print numbers that no test judges; these check that they run and say what they measured.</summary>
public sealed class BenchCliTests
{
    [Fact]
    public void TheDecodeProfilePrintsEveryPartForEachBatchBesideTheWholeStep()
    {
        var profile = Run("bench", "profile", "--model", "tiny", "--batch", "1,4", "--context", "16", "--repeats", "1");
        Assert.True(profile.ExitCode == 0, profile.Stderr + profile.Stdout);
        var lines = profile.Stdout.Split('\n');
        Assert.Contains("| part | 1 row | 4 rows |", lines);
        foreach (string part in new[] { "| output layer (C -> 50258) |", "| sampling (top-p 0.9", "| **whole step (engine path)** |",
                     "| the same step as a fixed batch", "| the same step on a skeleton model" })
        {
            var row = lines.Single(l => l.StartsWith(part, StringComparison.Ordinal));
            Assert.Equal(4, row.Count(c => c == '|')); // the name and one cell per batch size
        }
    }

    [Fact]
    public void AProfileThatDoesNotFitTheBlockIsRefusedWithTheLimit()
    {
        var profile = Run("bench", "profile", "--model", "tiny", "--batch", "1", "--context", "600");
        Assert.NotEqual(0, profile.ExitCode);
        Assert.Contains("block size 512", profile.Stderr + profile.Stdout);
    }

    [Fact]
    public void DecodeComparesTheOwnKernelWithLibTorchsRowByRow()
    {
        var decode = Run("bench", "decode", "--model", "tiny", "--batch", "1,2", "--dtype", "fp32", "--prompt-tokens", "4", "--new-tokens", "3", "--kernel", "own,torch");
        Assert.True(decode.ExitCode == 0, decode.Stderr + decode.Stdout);
        // The path in effect is printed: this process's, which the child inherits with the environment.
        Assert.Contains($"own kernels {OrleansGpt.Training.Numerics.Simd.Path}", decode.Stdout);
        var rows = decode.Stdout.Split('\n').Where(l => l.StartsWith("| tiny |", StringComparison.Ordinal)).ToArray();
        Assert.Equal(["own", "torch", "own", "torch"], rows.Select(l => l.Split('|')[4].Trim()));
    }

    [Theory]
    [InlineData("decode", "--kernel", "gpu", "not one of own, torch")]
    [InlineData("train", "--dropout", "1.5", "--dropout 1.5 must be in [0, 1)")]
    public void ABadBenchSettingIsRefusedNamingTheOption(string bench, string option, string value, string message)
    {
        var result = Run("bench", bench, "--model", "tiny", option, value);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(message, result.Stderr + result.Stdout);
    }
}
