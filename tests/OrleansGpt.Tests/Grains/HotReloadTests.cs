using System.Net;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Tests.Grains;

[Collection(nameof(ClusterCollection))]
public sealed class HotReloadTests(ClusterFixture fixture)
{
    [Fact]
    public async Task ReloadingServesTheNewWeightsWhileARunningStreamFinishes()
    {
        string directory = Path.Combine(fixture.CheckpointDirectory, "reloadable");
        Write(directory, seed: 31, "first weights");
        var grain = fixture.Grains.GetGrain<IModelGrain>("reloadable@cpu:0");
        var request = new GenerationRequest([1, 2, 3, 4], new SamplingOptions(MaxTokens: 30, Seed: 8));
        Assert.StartsWith("untrained: first weights", (await grain.GetInfoAsync()).Provenance);
        var before = await Tokens(grain.GenerateAsync(request));

        var running = grain.GenerateAsync(request).GetAsyncEnumerator();
        Assert.True(await running.MoveNextAsync());

        Write(directory, seed: 32, "second weights");
        Assert.StartsWith("untrained: second weights", (await grain.ReloadAsync()).Provenance);
        Assert.StartsWith("untrained: second weights", (await grain.GetInfoAsync()).Provenance);
        var after = await Tokens(grain.GenerateAsync(request));
        Assert.NotEqual(before, after);

        // The stream that started before the reload completes, on the weights it started with.
        var rest = new List<int>(running.Current.Tokens);
        while (await running.MoveNextAsync()) rest.AddRange(running.Current.Tokens);
        await running.DisposeAsync();
        Assert.Equal(before, rest);
    }

    [Fact]
    public async Task OperatorsCanReloadOverHttp()
    {
        Write(Path.Combine(fixture.CheckpointDirectory, "operated"), seed: 40, "operator test");
        var ok = await fixture.Api.PostAsync("/v1/models/operated/reload", null);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Contains("operator test", await ok.Content.ReadAsStringAsync());
        var missing = await fixture.Api.PostAsync("/v1/models/nothing-here/reload", null);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    private static void Write(string directory, long seed, string description)
    {
        using var model = TestModels.Random(TestModels.TinyGpt2Vocabulary, seed);
        Gpt2Checkpoint.Save(model, directory, new ModelProvenance("untrained", description));
    }

    private static async Task<List<int>> Tokens(IAsyncEnumerable<GeneratedChunk> stream) =>
        [.. (await TestModels.CollectAsync(stream)).SelectMany(c => c.Tokens)];
}
