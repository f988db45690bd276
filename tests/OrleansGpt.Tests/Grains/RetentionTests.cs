using Microsoft.Extensions.DependencyInjection;
using OrleansGpt.Grains;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Grains;

/// <summary>ModelHost:Retention: the store, the fine-tuning runs and a silo's cache do not grow without bound.</summary>
public sealed class RetentionTests
{
    [Fact]
    public async Task OldVersionsLoseTheirFilesButKeepTheirLineageAndRollbackStillWorks()
    {
        await using var serving = await ServingCluster.StartAsync([("kept", TestModels.TinyGpt2Vocabulary, 1, "first")], (_, o) =>
        {
            o.Retention.Versions = 2;
            o.Retention.CachedVersions = 0;
        });
        var host = serving.Cluster.Silos[0].ServiceProvider.GetRequiredService<ModelHost>();
        var store = host.Store;
        var registry = serving.Grains.GetGrain<ICheckpointRegistryGrain>("kept");
        var grain = serving.Grains.GetGrain<IModelGrain>("kept@cpu:0");
        string first = (await grain.GetInfoAsync()).Version;

        // Three more versions, each fine-tuned (by its parent's account) from the one before and promoted in turn.
        var versions = new List<string> { first };
        for (int seed = 2; seed <= 4; seed++)
        {
            using var temp = TestModels.TempDir();
            using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed))
                Gpt2Checkpoint.Save(model, temp.Path, new ModelProvenance("fine-tuned", $"version {seed}"));
            var manifest = store.Publish("kept", temp.Path, new CheckpointOrigin(Parent: versions[^1]));
            await registry.RegisterAsync(CheckpointRegistryGrain.From(manifest));
            await registry.PromoteAsync(manifest.Version);
            versions.Add(manifest.Version);
        }

        // The store keeps the active version and the one a rollback returns to; the others lost their files only.
        Assert.Equal(versions[^2..].Order(), store.Versions("kept").Select(m => m.Version).Order());
        var listed = await registry.GetVersionsAsync();
        Assert.Equal(versions, listed.Select(v => v.Version));
        Assert.Equal([true, true, false, false], listed.Select(v => v.Removed));
        Assert.Equal(versions[^2], listed[^1].Parent); // lineage: each names its parent, removed or not
        var refused = await Assert.ThrowsAsync<ArgumentException>(() => registry.PromoteAsync(first).AsTask());
        Assert.Contains("Retention", refused.Message);

        // Rollback returns to the kept previous version; there is nothing further back to return to.
        Assert.Equal(versions[^2], (await registry.RollbackAsync()).Version);
        Assert.Equal(versions[^2], (await grain.GetInfoAsync()).Version);
        await Assert.ThrowsAsync<InvalidOperationException>(() => registry.RollbackAsync().AsTask());

        // The silo's cache holds only what it serves (CachedVersions = 0).
        Assert.Equal([versions[^2]], Directory.GetDirectories(Path.Combine(host.CacheDirectory, "kept")).Select(Path.GetFileName));
    }

    [Fact]
    public void OnlyTheNewestRunsOfTheSizeAreKept()
    {
        using var temp = TestModels.TempDir();
        var store = new CheckpointStore(temp.Path);
        string[] runs = ["tiny-20261101-100000-aaaaaa", "tiny-20261102-100000-bbbbbb", "tiny-20261103-100000-cccccc", "tiny-20261104-100000-dddddd"];
        string[] others = ["tiny-2-20261101-100000-eeeeee", "small-20261101-100000-ffffff"]; // another size, one whose name starts like it
        foreach (var run in runs.Concat(others))
            Directory.CreateDirectory(Path.Combine(temp.Path, ".runs", run, "checkpoint"));

        CheckpointFolder.PruneRuns(store, "tiny", keep: 2);

        Assert.Equal(runs[2..].Concat(others).Order(), Directory.GetDirectories(Path.Combine(temp.Path, ".runs")).Select(Path.GetFileName).Order());
    }
}
