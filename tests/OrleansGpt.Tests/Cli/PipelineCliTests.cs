using static OrleansGpt.Tests.Cli.TrainingCli;

namespace OrleansGpt.Tests.Cli;

/// <summary>prepare, train, eval, sweep and generate through the command line, on a small synthetic archive.</summary>
public sealed partial class PipelineCliTests
{
    [Fact]
    public void PrepareTrainEvalAndGenerateWorkTogether()
    {
        using var dir = TestModels.TempDir();
        string[] categories = ["cs.AI", "cs.LG", "cs.CL", "cs.CV"];
        string tsv = TestData.Write(dir.Sub("papers.tsv.gz"), Enumerable.Range(0, 40).Select(i =>
            TestData.Row(i, $"2503.{i:D5}", categories[i % 4], $"Title {i} {TestData.Words(i + 50, 4)}", TestData.Words(i, 40))));

        var prepare = Run("prepare", "--input", tsv, "--out", dir.Sub("data"), "--eval-fraction", "0.25");
        Assert.True(prepare.ExitCode == 0, prepare.Stderr);
        Assert.Contains("## Papers per category (Table 1)", prepare.Stdout);
        Assert.True(File.Exists(Path.Combine(dir.Sub("data"), "stats.json")));

        // The eval papers as the appendix job's input: the first N, in the order eval and quality read them.
        var titles = Run("titles", "--data", dir.Sub("data"), "--count", "3", "--out", dir.Sub("titles.tsv"));
        Assert.True(titles.ExitCode == 0, titles.Stderr);
        var rows = OrleansGpt.Client.AppendixCommand.ReadTitles(dir.Sub("titles.tsv"));
        var real = OrleansGpt.Training.Quality.Samples.ReadSplit(dir.Sub("data"), "eval", 3);
        Assert.Equal(real.Select(p => ($"cs.{p.Category}", p.Title)), rows.Select(r => (r.Category, r.Title)));

        string[] train = ["train", "--data", dir.Sub("data"), "--out", dir.Sub("run"), "--model", "tiny", "--block-size", "32", "--batch-size", "2", "--max-steps", "2", "--lr", "1e-3", "--eval-blocks", "2", "--log-every", "1", "--beta2", "0.95", "--lr-schedule", "wsd"];
        var trained = Run(train);
        Assert.True(trained.ExitCode == 0, trained.Stderr + trained.Stdout);
        Assert.Contains("(wsd, decaying over the last 20%, 0 warm-up steps)", trained.Stdout);
        Assert.Contains("optimizer: AdamW betas (0.9, 0.95)", trained.Stdout);
        Assert.Contains("2 batch x 1 accum x 32 tokens = 64 tokens/step", trained.Stdout);
        Assert.Contains("step 2/2", trained.Stdout);
        Assert.True(File.Exists(Path.Combine(dir.Sub("run"), "metrics.jsonl")));
        Assert.True(File.Exists(Path.Combine(dir.Sub("run"), "loss.png")));

        // Runs side by side: one line per run in each plot, every evaluation in the table.
        var curves = Run("curves", "--run", dir.Sub("run"), "--run", dir.Sub("run"), "--label", "first", "--label", "second", "--out", dir.Sub("curves"));
        Assert.True(curves.ExitCode == 0, curves.Stderr);
        Assert.Contains("| first | 2 | ", curves.Stdout);
        Assert.Contains("| second | 2 | ", curves.Stdout);
        Assert.True(File.Exists(Path.Combine(dir.Sub("curves"), "perplexity.png")));
        Assert.True(File.Exists(Path.Combine(dir.Sub("curves"), "title-gain.png")));
        Assert.True(File.Exists(Path.Combine(dir.Sub("curves"), "perplexity-tokens.png")));
        Assert.True(File.Exists(Path.Combine(dir.Sub("curves"), "title-gain-tokens.png")));
        // A run's metrics kept apart from its directory (as docs/training keeps the appendix model's) is a run too,
        // named by its file.
        string kept = Path.Combine(dir.Path, "kept-metrics.jsonl");
        File.Copy(Path.Combine(dir.Sub("run"), "metrics.jsonl"), kept);
        var fromFile = Run("curves", "--run", kept, "--out", dir.Sub("curves-file"));
        Assert.True(fromFile.ExitCode == 0, fromFile.Stderr);
        Assert.Contains("| kept-metrics | 2 | ", fromFile.Stdout);
        var unlabelled = Run("curves", "--run", dir.Sub("run"), "--run", dir.Sub("run"), "--label", "first", "--out", dir.Sub("curves2"));
        Assert.Equal(1, unlabelled.ExitCode);
        Assert.Contains("give one per --run", unlabelled.Stderr);

        // Running again into the same directory would lose the checkpoint: refused, with the way forward.
        var again = Run(train);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("--resume", again.Stderr);

        var eval = Run("eval", "--checkpoint", dir.Sub("run"), "--data", dir.Sub("data"), "--block-size", "64");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        Assert.Contains("trained-from-scratch", eval.Stdout);
        foreach (var name in new[] { "cs.AI", "cs.LG", "cs.CL", "cs.CV", "overall" })
            Assert.Contains($"| {name} |", eval.Stdout);
        Assert.Contains("| category | examples | abstract tokens | loss with title | without | title gain |", eval.Stdout);
        Assert.Contains("\"title_gain\"", eval.Stdout);

        var generate = Run("generate", "--checkpoint", dir.Sub("run"), "--category", "CV", "--title", "Deep Residual Learning", "--max-tokens", "8", "--seed", "1");
        Assert.True(generate.ExitCode == 0, generate.Stderr);
        Assert.DoesNotContain("untrained", generate.Stderr);

        var sweep = Run("sweep", "--data", dir.Sub("data"), "--out", dir.Sub("sweep"), "--model", "tiny", "--block-size", "32", "--batch-size", "2", "--max-steps", "1", "--eval-blocks", "1", "--vary", "grad-accum=1,2");
        Assert.True(sweep.ExitCode == 0, sweep.Stderr);
        Assert.Contains("| grad-accum | train loss | eval loss | PPL |", sweep.Stdout);
        Assert.Contains("\n| 1 | ", sweep.Stdout);
        Assert.Contains("\n| 2 | ", sweep.Stdout);

        // Shapes at equal time: each run is the shape it names, and stops at the time limit.
        var shapes = Run("sweep", "--data", dir.Sub("data"), "--out", dir.Sub("shapes"), "--block-size", "32", "--batch-size", "2", "--eval-blocks", "1", "--time-limit", "0.002", "--vary", "shape=1x64,2x128");
        Assert.True(shapes.ExitCode == 0, shapes.Stderr);
        Assert.Contains("| shape | train loss |", shapes.Stdout);
        Assert.Contains("time limit of 0.002 minutes reached", shapes.Stderr);
        foreach (var (name, layers, width, heads) in new[] { ("1x64", 1, 64, 1), ("2x128", 2, 128, 2) })
        {
            using var model = OrleansGpt.Training.Model.Gpt2Checkpoint.Load(Path.Combine(dir.Sub("shapes"), $"shape-{name}"));
            Assert.Equal((layers, width, heads), (model.Config.Layers, model.Config.Embedding, model.Config.Heads));
        }
    }

    [Fact]
    public async Task CtrlCSavesACheckpointThatResumeFinishes()
    {
        // A process started in the background of a non-interactive shell inherits SIGINT ignored, and .NET keeps it
        // ignored, so the run this test starts would never see Ctrl-C and would finish with 0.
        Assert.False(SigIntIgnored(), "SIGINT is ignored in this test process (was it started in the background by a shell?): the training run cannot see Ctrl-C; run the tests in the foreground");
        using var dir = TestModels.TempDir();
        string data = TestData.Prepared(dir.Path);
        string[] train = ["train", "--data", data, "--out", dir.Sub("run"), "--model", "tiny", "--block-size", "32", "--batch-size", "2", "--max-steps", "60", "--lr", "1e-3", "--eval-blocks", "1", "--log-every", "1"];

        using var process = Start(train);
        var stderr = process.StandardError.ReadToEndAsync();
        string? line;
        while ((line = process.StandardOutput.ReadLine()) is not null && !line.StartsWith("step 2/", StringComparison.Ordinal)) { }
        Assert.NotNull(line);
        Assert.Equal(0, SendSignal(process.Id, SigInt));
        string rest = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(60_000), "the run did not stop after Ctrl-C");
        Assert.Equal(130, process.ExitCode);
        Assert.Contains("Ctrl-C", await stderr);
        Assert.Contains("Continue with the same command plus --resume", rest);

        var resumed = Run([.. train, "--resume"]);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr + resumed.Stdout);
        Assert.Contains("resuming at step", resumed.Stdout);
        Assert.Contains("step 60/60", resumed.Stdout);
    }

    [Fact]
    public void MalformedInputFailsWithFileLineAndReason()
    {
        using var dir = TestModels.TempDir();
        string tsv = TestData.Write(dir.Sub("bad.tsv"), ["0\t\"unclosed"]);
        var prepare = Run("prepare", "--input", tsv, "--out", dir.Sub("data"));
        Assert.Equal(1, prepare.ExitCode);
        Assert.Equal($"error: {tsv}:2: a quoted field is never closed (unbalanced '\"')", prepare.Stderr.Trim().Split('\n')[^1]);
        Assert.False(Directory.Exists(dir.Sub("data")));

        AssertRefused("unknown setting 'depth'", "sweep", "--data", dir.Sub("data"), "--out", dir.Sub("s"), "--vary", "depth=1,2");
        AssertRefused("'8' is not LAYERSxWIDTH", "sweep", "--data", dir.Sub("data"), "--out", dir.Sub("s"), "--vary", "shape=8");
        AssertRefused("--beta2 must be in (0, 1)", "sweep", "--data", dir.Sub("data"), "--out", dir.Sub("s"), "--vary", "beta2=0.95,1");

        // Optimizer settings: an unknown optimizer and Muon settings out of range are refused before anything is written.
        var unknown = Run("train", "--data", dir.Sub("data"), "--out", dir.Sub("run"), "--optimizer", "sgd");
        Assert.NotEqual(0, unknown.ExitCode);
        Assert.Contains("sgd", unknown.Stderr);
        Assert.Contains("muon", unknown.Stderr);
        AssertRefused("--muon-lr must be positive", "train", "--data", dir.Sub("data"), "--out", dir.Sub("run"), "--optimizer", "muon", "--muon-lr", "0");
        AssertRefused("--muon-momentum applies only with --optimizer muon", "train", "--data", dir.Sub("data"), "--out", dir.Sub("run"), "--muon-momentum", "0.9");
        AssertRefused("--vary muon-lr applies only with --optimizer muon", "sweep", "--data", dir.Sub("data"), "--out", dir.Sub("s"), "--vary", "muon-lr=0.01,0.02");
        AssertRefused("'maybe' is not true or false", "sweep", "--data", dir.Sub("data"), "--out", dir.Sub("s"), "--vary", "abstract-only-loss=true,maybe");
        AssertRefused("'sgd' is not adamw or muon", "sweep", "--data", dir.Sub("data"), "--out", dir.Sub("s"), "--vary", "optimizer=muon,sgd");
        Assert.False(Directory.Exists(dir.Sub("run")));
        Assert.False(Directory.Exists(dir.Sub("s")));
    }

    /// <summary>Runs the command and checks it exits with 1, its error saying <paramref name="expected"/>.</summary>
    private static void AssertRefused(string expected, params string[] args)
    {
        var result = Run(args);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains(expected, result.Stderr);
    }

    private const int SigInt = 2;

    /// <summary>Whether this process ignores SIGINT (Linux's /proc/self/status lists ignored signals as a hex mask).</summary>
    private static bool SigIntIgnored()
    {
        string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (SigInt - 1))) != 0;
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    private static partial int SendSignal(int pid, int signal);
}
