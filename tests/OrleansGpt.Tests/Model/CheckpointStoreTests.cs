using OrleansGpt.Tests.Cli;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Model;

public sealed class CheckpointStoreTests
{
    [Fact]
    public void VersionsAreContentHashesAndPublishingTwiceChangesNothing()
    {
        using var temp = TestModels.TempDir();
        var store = new CheckpointStore(temp.Sub("store"));
        Save(temp.Sub("one"), seed: 1, "first");
        Save(temp.Sub("two"), seed: 2, "second");

        var first = store.Publish("tiny", temp.Sub("one"), new CheckpointOrigin(Data: "/data/x", EvalPerplexity: 42));
        Assert.Matches("^[0-9a-f]{16}$", first.Version);
        Assert.Equal(("untrained", "first", "/data/x", 42.0), (first.Kind, first.Description, first.Data, first.EvalPerplexity));
        var again = store.Publish("tiny", temp.Sub("one"));
        Assert.Equal((first.Version, first.Created), (again.Version, again.Created));
        Assert.Equal(first.Files, again.Files);
        var second = store.Publish("tiny", temp.Sub("two"), new CheckpointOrigin(Parent: first.Version));
        Assert.NotEqual(first.Version, second.Version);
        Assert.Equal(first.Version, second.Parent);
        Assert.Equal([first.Version, second.Version], store.Versions("tiny").Select(v => v.Version));
        Assert.Equal(["tiny"], store.Sizes());
        Assert.Throws<ArgumentException>(() => store.Manifest("tiny", "0123456789abcdef"));
        Assert.Throws<ArgumentException>(() => store.Publish("../escape", temp.Sub("one")));
    }

    [Fact]
    public void FetchChecksEveryFileAndReplacesADamagedCache()
    {
        using var temp = TestModels.TempDir();
        var store = new CheckpointStore(temp.Sub("store"));
        Save(temp.Sub("one"), seed: 1, "first");
        var manifest = store.Publish("tiny", temp.Sub("one"));

        string cached = store.Fetch(manifest, temp.Sub("cache"));
        Assert.Null(CheckpointStore.Mismatch(cached, manifest));
        // A damaged local copy is noticed and fetched again from the store.
        Corrupt(Path.Combine(cached, Gpt2Checkpoint.WeightsFile));
        Assert.Equal(Gpt2Checkpoint.WeightsFile, CheckpointStore.Mismatch(cached, manifest));
        Assert.Equal(cached, store.Fetch(manifest, temp.Sub("cache")));
        Assert.Null(CheckpointStore.Mismatch(cached, manifest));

        // A damaged store copy is refused, naming the file, and leaves no cache entry behind.
        Corrupt(Path.Combine(store.VersionDirectory("tiny", manifest.Version), Gpt2Checkpoint.WeightsFile));
        var refused = Assert.Throws<InvalidDataException>(() => store.Fetch(manifest, temp.Sub("other-cache")));
        Assert.Contains($"Checkpoint tiny/{manifest.Version} is damaged: model.safetensors", refused.Message);
        Assert.False(Directory.Exists(Path.Combine(temp.Sub("other-cache"), "tiny", manifest.Version)));
    }

    [Fact]
    public void APublishKilledHalfWayNeverBecomesAVersion()
    {
        using var temp = TestModels.TempDir();
        // A GPT-2 distil checkpoint (330 MB of weights), so copying and hashing it takes long enough to be cut short.
        Assert.Equal(0, TrainingCli.Run("init", "--model", "distil", "--out", temp.Sub("distil")).ExitCode);
        string storeRoot = temp.Sub("store");
        using (var publish = TrainingCli.Start("publish", "--checkpoint", temp.Sub("distil"), "--store", storeRoot, "--size", "distil"))
        {
            string staging = Path.Combine(storeRoot, ".staging");
            for (var deadline = DateTime.UtcNow.AddSeconds(60); !WeightsBeingWritten(staging); Thread.Sleep(5))
                Assert.True(DateTime.UtcNow < deadline && !publish.HasExited, "the publish finished before it could be killed");
            publish.Kill(); // SIGKILL, mid-copy
            publish.WaitForExit();
        }
        var store = new CheckpointStore(storeRoot);
        Assert.Empty(store.Versions("distil"));
        Assert.Empty(store.Sizes());

        // The next publish completes, and its version is whole.
        var result = TrainingCli.Run("publish", "--checkpoint", temp.Sub("distil"), "--store", storeRoot, "--size", "distil");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var version = Assert.Single(store.Versions("distil"));
        Assert.Equal(result.Stdout.Trim(), version.Version);
        Assert.Null(CheckpointStore.Mismatch(store.VersionDirectory("distil", version.Version), version));
    }

    private static bool WeightsBeingWritten(string staging) =>
        Directory.Exists(staging) && Directory.EnumerateFiles(staging, Gpt2Checkpoint.WeightsFile, SearchOption.AllDirectories).Any(f => new FileInfo(f).Length > 0);

    private static void Save(string directory, long seed, string description)
    {
        using var model = TestModels.Random(TestModels.Tiny, seed);
        Gpt2Checkpoint.Save(model, directory, new ModelProvenance("untrained", description));
    }

    private static void Corrupt(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        file.Seek(-8, SeekOrigin.End);
        file.Write(new byte[8]);
    }
}
