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
}
