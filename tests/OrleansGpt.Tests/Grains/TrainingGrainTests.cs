using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Tests.Grains;

[Collection(nameof(ClusterCollection))]
public sealed class TrainingGrainTests(ClusterFixture fixture)
{
    private readonly IGrainFactory _grains = fixture.Grains;

    [Fact]
    public async Task FineTuningPublishesNewWeightsThatEveryReplicaReloads()
    {
        using var temp = TestModels.TempDir();
        string data = TestData.Prepared(temp.Path, papers: 200, words: 60);
        var model = _grains.GetGrain<IModelGrain>("tunable@cpu:0");
        var request = new GenerationRequest([464, 3290], new SamplingOptions(MaxTokens: 12, Seed: 4));
        var before = await Tokens(model.GenerateAsync(request));
        var trainer = _grains.GetGrain<ITrainingGrain>("tunable");

        // A long run is refused a second start, and cancelling it publishes nothing.
        var running = await trainer.StartAsync(new FineTuneRequest(data, Epochs: 100, BlockSize: 32, BatchSize: 2));
        Assert.Equal(TrainingState.Running, running.State);
        await Assert.ThrowsAsync<InvalidOperationException>(() => trainer.StartAsync(new FineTuneRequest(data)).AsTask());
        await trainer.CancelAsync();
        var cancelled = await FinishedAsync(trainer);
        Assert.Equal(TrainingState.Cancelled, cancelled.State);
        Assert.StartsWith("untrained: before fine-tuning", (await model.GetInfoAsync()).Provenance);

        // data_directory relative to ModelHost:DataDirectory (the temp folder here), as an operator would give it.
        await trainer.StartAsync(new FineTuneRequest(Path.GetRelativePath(Path.GetTempPath(), data), MaxSteps: 4, LearningRate: 1e-2, BlockSize: 32, BatchSize: 2));
        var done = await FinishedAsync(trainer);
        Assert.True(done.State == TrainingState.Succeeded, done.Message);
        Assert.Equal(4, done.Step);
        Assert.NotNull(done.EvalLoss);
        Assert.Equal(["tunable@test/cpu:0"], done.Reloaded);
        var info = await model.GetInfoAsync();
        Assert.StartsWith("fine-tuned: fine-tuned from " + Path.Combine(done.RunDirectory!, "base"), info.Provenance);
        Assert.Equal(done.Version, info.Version);
        Assert.NotEqual(before, await Tokens(model.GenerateAsync(request)));
        // The version it replaced stays in the registry, as the new one's parent; the run is in the history.
        var versions = await _grains.GetGrain<ICheckpointRegistryGrain>("tunable").GetVersionsAsync();
        var published = Assert.Single(versions, v => v.Active);
        Assert.Equal((done.Version, "fine-tuned", data), (published.Version, published.Kind, published.Data));
        Assert.Contains(versions, v => v.Version == published.Parent && v.Kind == "untrained");
        Assert.Equal([TrainingState.Cancelled, TrainingState.Succeeded], (await trainer.GetHistoryAsync()).Select(h => h.State));

        // A cancel that arrives after the last step, while the final evaluation, save and plot run (which the trainer
        // does not stop for), still means "do not publish".
        await trainer.StartAsync(new FineTuneRequest(data, MaxSteps: 2, LearningRate: 1e-2, BlockSize: 32, BatchSize: 2));
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while ((await trainer.GetStatusAsync()) is { State: TrainingState.Running } s && s.Step < 2)
        {
            Assert.True(DateTime.UtcNow < deadline, "the run did not reach its last step");
            await Task.Delay(2);
        }
        await trainer.CancelAsync();
        var late = await FinishedAsync(trainer);
        Assert.True(late.State == TrainingState.Cancelled, $"{late.State}: {late.Message}");
        Assert.Equal(done.Version, (await model.GetInfoAsync()).Version);
        Assert.Equal(done.Version, await _grains.GetGrain<ICheckpointRegistryGrain>("tunable").GetActiveAsync());

        // GET /v1/models shows the whole lineage of what is served: the fine-tune, then the checkpoint it started from.
        var models = await fixture.Api.GetFromJsonAsync<JsonElement>("/v1/models");
        var replica = models.GetProperty("data").EnumerateArray().Single(m => m.GetProperty("id").GetString() == "tunable").GetProperty("replicas")[0];
        var lineage = replica.GetProperty("lineage").EnumerateArray().ToList();
        Assert.Equal([(done.Version, "fine-tuned"), (published.Parent, "untrained")],
            lineage.Select(l => (l.GetProperty("version").GetString(), l.GetProperty("kind").GetString())));
        Assert.Equal(data, lineage[0].GetProperty("data").GetString());
        Assert.Contains("4 steps", lineage[0].GetProperty("settings").GetString());
    }

    [Fact]
    public async Task BadFineTuningRequestsFailClearly()
    {
        using var temp = TestModels.TempDir();
        var missingSize = await Assert.ThrowsAsync<ArgumentException>(() => _grains.GetGrain<ITrainingGrain>("absent").StartAsync(new FineTuneRequest(temp.Path)).AsTask());
        Assert.Contains("No checkpoint for 'absent'", missingSize.Message);
        Assert.Equal(TrainingState.Idle, (await _grains.GetGrain<ITrainingGrain>("absent").GetStatusAsync()).State);
        var trainer = _grains.GetGrain<ITrainingGrain>("operated");
        var noData = await Assert.ThrowsAsync<ArgumentException>(() => trainer.StartAsync(new FineTuneRequest(temp.Path)).AsTask());
        Assert.Contains("prepare", noData.Message);
        string data = TestData.Prepared(temp.Path, papers: 20);
        await Assert.ThrowsAnyAsync<ArgumentException>(() => trainer.StartAsync(new FineTuneRequest(data, BlockSize: 1)).AsTask());
        // Data outside ModelHost:DataDirectory is refused whatever it holds, however the path is written.
        foreach (var outside in new[] { "/etc", "../" + Path.GetFileName(Path.GetDirectoryName(Path.GetTempPath().TrimEnd('/'))!), Path.Combine(Path.GetTempPath(), "..", "etc") })
        {
            var refused = await Assert.ThrowsAsync<ArgumentException>(() => trainer.StartAsync(new FineTuneRequest(outside)).AsTask());
            Assert.Contains("outside ModelHost:DataDirectory", refused.Message);
        }
        Assert.Equal(TrainingState.Idle, (await trainer.GetStatusAsync()).State);
    }

    [Fact]
    public async Task OperatorsStartFollowAndCancelFineTuningOverHttp()
    {
        using var temp = TestModels.TempDir();
        string data = TestData.Prepared(temp.Path, papers: 200, words: 60);
        var http = fixture.Api;
        Assert.Equal("idle", (await http.GetFromJsonAsync<JsonElement>("/v1/fine-tunes/tiny")).GetProperty("state").GetString());

        var noData = await http.PostAsJsonAsync("/v1/fine-tunes", new { model = "tiny" });
        Assert.Equal(HttpStatusCode.BadRequest, noData.StatusCode);
        Assert.Equal("data_directory", (await noData.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("param").GetString());
        var notPrepared = await http.PostAsJsonAsync("/v1/fine-tunes", new { model = "tiny", data_directory = temp.Path });
        Assert.Equal(HttpStatusCode.BadRequest, notPrepared.StatusCode);
        var outside = await http.PostAsJsonAsync("/v1/fine-tunes", new { model = "tiny", data_directory = "/etc" });
        Assert.Equal(HttpStatusCode.BadRequest, outside.StatusCode);
        var error = (await outside.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Equal("data_directory", error.GetProperty("param").GetString());
        Assert.Contains("ModelHost:DataDirectory", error.GetProperty("message").GetString());

        var started = await http.PostAsJsonAsync("/v1/fine-tunes", new { model = "tiny", data_directory = data, epochs = 100, block_size = 32, batch_size = 2 });
        Assert.Equal(HttpStatusCode.Accepted, started.StatusCode);
        Assert.Equal("running", (await started.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("state").GetString());
        var again = await http.PostAsJsonAsync("/v1/fine-tunes", new { model = "tiny", data_directory = data });
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsJsonAsync("/v1/fine-tunes/tiny/cancel", new { })).StatusCode);
        Assert.Equal(TrainingState.Cancelled, (await FinishedAsync(_grains.GetGrain<ITrainingGrain>("tiny"))).State);
        Assert.StartsWith("untrained", (await _grains.GetGrain<IModelGrain>("tiny@cpu:0").GetInfoAsync()).Provenance);
    }

    private static async Task<TrainingStatus> FinishedAsync(ITrainingGrain trainer)
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
        TrainingStatus status;
        while ((status = await trainer.GetStatusAsync()).State == TrainingState.Running)
        {
            Assert.True(DateTime.UtcNow < deadline, "the fine-tuning run did not finish in 2 minutes");
            await Task.Delay(50);
        }
        return status;
    }

    private static async Task<List<int>> Tokens(IAsyncEnumerable<GeneratedChunk> stream) =>
        [.. (await TestModels.CollectAsync(stream)).SelectMany(c => c.Tokens)];
}
