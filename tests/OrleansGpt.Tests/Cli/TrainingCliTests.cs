using static OrleansGpt.Tests.Cli.TrainingCli;

namespace OrleansGpt.Tests.Cli;

/// <summary>The Training command line, run as a process from the test output folder.</summary>
public sealed class TrainingCliTests
{
    [Fact]
    public void TokenizeAndDetokenizeRoundTrip()
    {
        var tokenize = Run("tokenize", "hello 👋 world 🌍");
        Assert.Equal((0, "31373 50169 233 995 12520 234 235"), (tokenize.ExitCode, tokenize.Stdout.Trim()));
        var detokenize = Run("detokenize", "31373", "50169,233", "995", "50257");
        Assert.Equal((0, "hello 👋 world<|sep|>"), (detokenize.ExitCode, detokenize.Stdout.Trim()));
    }

    [Fact]
    public void BadInputFailsWithOneClearLine()
    {
        var badId = Run("detokenize", "99999");
        Assert.Equal(1, badId.ExitCode);
        Assert.Equal("error: '99999' is not a token id (0 .. 50257)", badId.Stderr.Trim());

        var missing = Run("logits", "--checkpoint", "/nonexistent/ckpt", "--tokens", "1,2");
        Assert.Equal(1, missing.ExitCode);
        Assert.StartsWith("error: /nonexistent/ckpt is not a checkpoint directory", missing.Stderr.Trim());

        var both = Run("logits", "--checkpoint", "x", "--tokens", "1", "--text", "a");
        Assert.NotEqual(0, both.ExitCode);
        Assert.Contains("exactly one of --text or --tokens", both.Stderr + both.Stdout);
    }

    [Fact]
    public void InitWritesAnUntrainedCheckpointThatLogitsAndGenerateUse()
    {
        using var dir = TestModels.TempDir();
        string ckpt = dir.Sub("tiny");
        var init = Run("init", "--model", "tiny", "--out", ckpt, "--seed", "3");
        Assert.True(init.ExitCode == 0, init.Stderr);
        Assert.Contains("untrained", init.Stdout);
        Assert.True(File.Exists(Path.Combine(ckpt, "model.safetensors")));

        // init refuses to overwrite work unless asked to.
        var again = Run("init", "--model", "tiny", "--out", ckpt);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("--force", again.Stderr);

        var logits = Run("logits", "--checkpoint", ckpt, "--text", "Hello world", "--top", "3");
        Assert.True(logits.ExitCode == 0, logits.Stderr);
        var lines = logits.Stdout.Trim().Split('\n');
        Assert.Equal(3, lines.Length);
        var values = lines.Select(l => l.Split('\t')).Select(f => (Id: int.Parse(f[0]), Logit: double.Parse(f[1], System.Globalization.CultureInfo.InvariantCulture))).ToArray();
        Assert.True(values[0].Logit >= values[1].Logit && values[1].Logit >= values[2].Logit, "best first");
        Assert.Equal(logits.Stdout, Run("logits", "--checkpoint", ckpt, "--tokens", "15496,995", "--top", "3").Stdout);

        string[] generate = ["generate", "--checkpoint", ckpt, "--category", "CL", "--title", "Attention Is All You Need", "--max-tokens", "12", "--seed", "5"];
        var first = Run(generate);
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.Contains("untrained", first.Stderr); // random weights are never passed off as a model
        Assert.Contains("seed 5", first.Stderr);
        Assert.False(string.IsNullOrWhiteSpace(first.Stdout));
        Assert.Equal(first.Stdout, Run(generate).Stdout); // seeded: reproducible

        var badCategory = Run("generate", "--checkpoint", ckpt, "--category", "cs.RO", "--title", "x");
        Assert.Equal(1, badCategory.ExitCode);
        Assert.Contains("Unknown category", badCategory.Stderr);
        var badTopP = Run("generate", "--checkpoint", ckpt, "--category", "CL", "--title", "x", "--top-p", "1.5");
        Assert.Equal(1, badTopP.ExitCode);
        Assert.Contains("top_p must be in (0, 1]", badTopP.Stderr);
    }

    [Fact]
    public void EveryCommandHasHelp()
    {
        foreach (var command in new[] { "tokenize", "detokenize", "init", "logits", "generate", "prepare", "titles", "train", "eval", "sweep", "bench gemm", "bench decode", "bench train" })
        {
            var help = Run([.. command.Split(' '), "--help"]);
            Assert.True(help.ExitCode == 0, $"{command}: {help.Stderr}");
            Assert.Contains("Usage:", help.Stdout);
        }
    }
}
