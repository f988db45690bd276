using Orleans.Runtime;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Tests.Grains;

[Collection(nameof(ClusterCollection))]
public sealed class GrainTests(ClusterFixture fixture)
{
    private readonly IGrainFactory _grains = fixture.Grains;

    [Fact]
    public async Task AModelGrainStreamsTextThatDecodesItsTokens()
    {
        int[] prompt = PaperFormat.EncodePrompt(Gpt2Tokenizer.Shared, ArxivCategory.CL, "Attention Is All You Need");
        var chunks = await TestModels.CollectAsync(_grains.GetGrain<IModelGrain>("tiny@cpu:0").GenerateAsync(new GenerationRequest(prompt, new SamplingOptions(MaxTokens: 25, Seed: 3))));

        Assert.NotEmpty(chunks);
        Assert.All(chunks[..^1], c => Assert.Null(c.FinishReason));
        Assert.Contains(chunks[^1].FinishReason, new[] { "stop", "length" });
        var tokens = chunks.SelectMany(c => c.Tokens).Where(t => t != Gpt2Tokenizer.EndOfText).ToArray();
        Assert.Equal(Gpt2Tokenizer.Shared.Decode(tokens), string.Concat(chunks.Select(c => c.Text)));

        var again = await TestModels.CollectAsync(_grains.GetGrain<IModelGrain>("tiny@cpu:0").GenerateAsync(new GenerationRequest(prompt, new SamplingOptions(MaxTokens: 25, Seed: 3))));
        Assert.Equal(chunks.SelectMany(c => c.Tokens), again.SelectMany(c => c.Tokens)); // seeded: reproducible
    }

    [Fact]
    public async Task ModelInfoSaysHowTheWeightsWereMade()
    {
        var info = await _grains.GetGrain<IModelGrain>("tiny@cpu:0").GetInfoAsync();
        Assert.Equal(("tiny", "cpu:0"), (info.Size, info.Device));
        Assert.StartsWith("untrained: grain test model", info.Provenance);
        Assert.True(info.Parameters > 1_000_000);
    }

    [Fact]
    public async Task MissingCheckpointsAndDevicesFailClearly()
    {
        var missing = await Assert.ThrowsAsync<ArgumentException>(async () => await _grains.GetGrain<IModelGrain>("small@cpu:0").GetInfoAsync());
        Assert.Contains("No checkpoint for 'small'", missing.Message);
        var device = await Assert.ThrowsAsync<DeviceNotFoundException>(async () => await _grains.GetGrain<IModelGrain>("tiny@cuda:0").GetInfoAsync());
        Assert.Contains("No silo owns the device for model grain 'tiny@cuda:0'. Devices in the cluster: test/cpu:0", device.Message);
        var malformed = await Assert.ThrowsAsync<ArgumentException>(async () => await _grains.GetGrain<IModelGrain>("tiny").GetInfoAsync());
        Assert.Contains("size@device", malformed.Message);
    }

    [Fact]
    public async Task SessionSettingsAreValidatedAndSurviveDeactivation()
    {
        var session = _grains.GetGrain<ISessionGrain>("alice");
        Assert.Equal(SessionSettings.Default, await session.GetSettingsAsync());
        var mine = new SessionSettings("cs.cv", "tiny", new SamplingOptions(TopP: 0.8, MaxTokens: 12, Seed: 7));
        Assert.Equal("CV", (await session.UpdateSettingsAsync(mine)).Category);

        var bad = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await session.UpdateSettingsAsync(mine with { Sampling = new SamplingOptions(TopP: 1.5) }));
        Assert.Contains("top_p", bad.Message);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await session.UpdateSettingsAsync(mine with { Category = "cs.RO" }));
        // What the cluster can serve is checked too: a size no silo serves, and max_tokens above the silo's limit.
        var unserved = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await session.UpdateSettingsAsync(mine with { ModelSize = "small" }));
        Assert.Contains("No silo serves the 'small' model; served: operated, promoted, tiny, tunable", unserved.Message);
        var tooLong = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await session.UpdateSettingsAsync(mine with { Sampling = mine.Sampling with { MaxTokens = 41 } }));
        Assert.Contains("max_tokens is limited to 40 for 'tiny'", tooLong.Message);

        // Deactivate every idle grain; the session comes back from storage with the last valid settings.
        await _grains.GetGrain<IManagementGrain>(0).ForceActivationCollection(TimeSpan.Zero);
        var reloaded = await session.GetSettingsAsync();
        Assert.Equal(("CV", 0.8, 7L), (reloaded.Category, reloaded.Sampling.TopP, reloaded.Sampling.Seed!.Value));
    }

    [Fact]
    public async Task AbstractsStreamAndAreRecordedInABoundedHistoryWithTheirSeed()
    {
        var session = _grains.GetGrain<ISessionGrain>("bob");
        await session.UpdateSettingsAsync(new SessionSettings("AI", "tiny", new SamplingOptions(MaxTokens: 6)));
        var text = string.Concat((await TestModels.CollectAsync(session.WriteAbstractAsync("Knowledge Patterns"))).Select(c => c.Text));
        var history = await session.GetHistoryAsync();
        var entry = Assert.Single(history);
        Assert.Equal(("AI", "Knowledge Patterns", text.Trim()), (entry.Category, entry.Title, entry.Abstract));

        // The recorded seed reproduces the abstract.
        await session.UpdateSettingsAsync(new SessionSettings("AI", "tiny", new SamplingOptions(MaxTokens: 6, Seed: entry.Seed)));
        Assert.Equal(text, string.Concat((await TestModels.CollectAsync(session.WriteAbstractAsync("Knowledge Patterns"))).Select(c => c.Text)));

        for (int i = 0; i < 21; i++)
            await TestModels.CollectAsync(session.WriteAbstractAsync($"Title {i}"));
        history = await session.GetHistoryAsync();
        Assert.Equal(20, history.Count);
        Assert.Equal("Title 20", history[^1].Title);
    }

}
