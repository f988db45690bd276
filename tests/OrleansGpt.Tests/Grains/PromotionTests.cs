using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Tests.Grains;

/// <summary>Versions in the checkpoint store, promoted and rolled back on a serving replica, and refused when damaged.</summary>
[Collection(nameof(ClusterCollection))]
public sealed class PromotionTests(ClusterFixture fixture)
{
    private CheckpointStore Store => new(Path.Combine(fixture.CheckpointDirectory, ".store"));

    [Fact]
    public async Task PromotingServesTheNewVersionWhileARunningStreamFinishesOnTheOld()
    {
        var registry = fixture.Grains.GetGrain<ICheckpointRegistryGrain>("promoted");
        var grain = fixture.Grains.GetGrain<IModelGrain>("promoted@cpu:0");
        var request = new GenerationRequest([1, 2, 3, 4], new SamplingOptions(MaxTokens: 30, Seed: 8));
        var first = await grain.GetInfoAsync();
        Assert.Equal(first.Version, await registry.GetActiveAsync());
        var before = await TestModels.CollectAsync(grain.GenerateAsync(request));
        Assert.All(before, c => Assert.Equal(first.Version, c.Version));

        var running = grain.GenerateAsync(request).GetAsyncEnumerator();
        Assert.True(await running.MoveNextAsync());

        string second = await PublishAsync(seed: 32, "second weights");
        var promotion = await registry.PromoteAsync(second);
        Assert.Equal(first.Version, promotion.Previous);
        Assert.Equal(["promoted@test/cpu:0"], promotion.Replicas);
        var info = await grain.GetInfoAsync();
        Assert.Equal(second, info.Version);
        Assert.StartsWith("untrained: second weights", info.Provenance);
        var after = await TestModels.CollectAsync(grain.GenerateAsync(request));
        Assert.All(after, c => Assert.Equal(second, c.Version));
        Assert.NotEqual(Tokens(before), Tokens(after));

        // The stream that started before the promotion completes on the version it started with.
        var rest = new List<GeneratedChunk> { running.Current };
        while (await running.MoveNextAsync()) rest.Add(running.Current);
        await running.DisposeAsync();
        Assert.Equal(Tokens(before), Tokens(rest));
        Assert.All(rest, c => Assert.Equal(first.Version, c.Version));

        // Rollback brings the earlier version back, bit for bit.
        Assert.Equal(first.Version, (await registry.RollbackAsync()).Version);
        Assert.Equal(Tokens(before), Tokens(await TestModels.CollectAsync(grain.GenerateAsync(request))));
        await Assert.ThrowsAsync<InvalidOperationException>(() => registry.RollbackAsync().AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => registry.PromoteAsync("0123456789abcdef").AsTask());
    }

    [Fact]
    public async Task DamagedVersionsAreRefusedAndTheOldOneKeepsServing()
    {
        var registry = fixture.Grains.GetGrain<ICheckpointRegistryGrain>("promoted");
        var grain = fixture.Grains.GetGrain<IModelGrain>("promoted@cpu:0");
        string serving = (await grain.GetInfoAsync()).Version;

        // A file changed after publishing: its hash no longer matches the manifest.
        string tampered = await PublishAsync(seed: 33, "tampered later");
        string weights = Path.Combine(Store.VersionDirectory("promoted", tampered), Gpt2Checkpoint.WeightsFile);
        using (var file = new FileStream(weights, FileMode.Open, FileAccess.ReadWrite))
        {
            file.Seek(-16, SeekOrigin.End);
            file.Write(new byte[16]);
        }
        var hash = await Assert.ThrowsAsync<InvalidOperationException>(() => registry.PromoteAsync(tampered).AsTask());
        Assert.Contains("model.safetensors", hash.Message);
        Assert.Contains("damaged", hash.Message);
        Assert.Equal(serving, (await grain.GetInfoAsync()).Version);

        // A version whose weights are not valid safetensors at all (published that way, so the hash matches).
        using var temp = TestModels.TempDir();
        WriteCheckpoint(temp.Path, seed: 34, "truncated");
        string file2 = Path.Combine(temp.Path, Gpt2Checkpoint.WeightsFile);
        File.WriteAllBytes(file2, File.ReadAllBytes(file2)[..100]);
        string broken = Store.Publish("promoted", temp.Path).Version;
        await fixture.Grains.GetGrain<ICheckpointRegistryGrain>("promoted").RegisterAsync(Version(broken));
        var load = await Assert.ThrowsAsync<InvalidOperationException>(() => registry.PromoteAsync(broken).AsTask());
        Assert.Contains("cannot be loaded", load.Message);
        Assert.Equal(serving, (await grain.GetInfoAsync()).Version);

        // Weights that load but hold a NaN: refused by the probe a model must pass before it serves.
        using var diverged = TestModels.TempDir();
        using (var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed: 36))
        {
            using (TorchSharp.torch.no_grad())
                model.named_parameters().First(p => p.name.EndsWith("ln_f.weight", StringComparison.Ordinal)).parameter[0] = float.NaN;
            Gpt2Checkpoint.Save(model, diverged.Path, new ModelProvenance("trained-from-scratch", "diverged"));
        }
        string nan = Store.Publish("promoted", diverged.Path).Version;
        await registry.RegisterAsync(Version(nan));
        var probe = await Assert.ThrowsAsync<InvalidOperationException>(() => registry.PromoteAsync(nan).AsTask());
        Assert.Contains("not finite", probe.Message);

        Assert.Equal(serving, (await grain.GetInfoAsync()).Version);
        Assert.Equal(serving, await registry.GetActiveAsync());
        Assert.NotEmpty(await TestModels.CollectAsync(grain.GenerateAsync(new GenerationRequest([5, 6], new SamplingOptions(MaxTokens: 3)))));
    }

    [Fact]
    public async Task OperatorsListPromoteAndReloadVersionsOverHttp()
    {
        string version = await PublishAsync(seed: 35, "over http", size: "operated");
        var listed = await fixture.Api.GetFromJsonAsync<JsonElement>("/v1/models/operated/versions");
        Assert.Contains(listed.GetProperty("data").EnumerateArray(), v => v.GetProperty("version").GetString() == version && !v.GetProperty("active").GetBoolean());

        var promoted = await fixture.Api.PostAsJsonAsync("/v1/models/operated/promote", new { version });
        Assert.Equal(HttpStatusCode.OK, promoted.StatusCode);
        Assert.Equal(version, (await promoted.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("version").GetString());
        var models = await fixture.Api.GetFromJsonAsync<JsonElement>("/v1/models");
        var operated = models.GetProperty("data").EnumerateArray().Single(m => m.GetProperty("id").GetString() == "operated");
        Assert.Equal(version, operated.GetProperty("replicas")[0].GetProperty("version").GetString());
        var completion = await fixture.Api.PostAsJsonAsync("/v1/completions", new { model = "operated", prompt = "We", max_tokens = 2 });
        Assert.Equal(version, (await completion.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("system_fingerprint").GetString());
        var unknown = await fixture.Api.PostAsJsonAsync("/v1/models/operated/promote", new { version = "0123456789abcdef" });
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);

        // Reload brings the checkpoint directory's operated/ in as a version and promotes it.
        WriteCheckpoint(Path.Combine(fixture.CheckpointDirectory, "operated"), seed: 40, "operator test");
        var ok = await fixture.Api.PostAsJsonAsync("/v1/models/operated/reload", new { });
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        string reloaded = (await ok.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("version").GetString()!;
        Assert.StartsWith("untrained: operator test", (await fixture.Grains.GetGrain<IModelGrain>("operated@cpu:0").GetInfoAsync()).Provenance);
        Assert.Equal(reloaded, await fixture.Grains.GetGrain<ICheckpointRegistryGrain>("operated").GetActiveAsync());
        var missing = await fixture.Api.PostAsJsonAsync("/v1/models/nothing-here/reload", new { });
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    private async Task<string> PublishAsync(long seed, string description, string size = "promoted")
    {
        using var temp = TestModels.TempDir();
        WriteCheckpoint(temp.Path, seed, description);
        var manifest = Store.Publish(size, temp.Path);
        await fixture.Grains.GetGrain<ICheckpointRegistryGrain>(size).RegisterAsync(Version(manifest.Version, size));
        return manifest.Version;
    }

    private CheckpointVersion Version(string version, string size = "promoted") =>
        OrleansGpt.Grains.CheckpointRegistryGrain.From(Store.Manifest(size, version));

    private static void WriteCheckpoint(string directory, long seed, string description)
    {
        using var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed);
        Gpt2Checkpoint.Save(model, directory, new ModelProvenance("untrained", description));
    }

    private static List<int> Tokens(IEnumerable<GeneratedChunk> chunks) => [.. chunks.SelectMany(c => c.Tokens)];
}
