using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Tests.Grains;

/// <summary>A silo with one batch slot and one queue place, serving a model whose requests run for seconds.</summary>
public sealed class BusyFixture : IAsyncLifetime
{
    public ServingCluster Serving { get; private set; } = null!;

    public async Task InitializeAsync() => Serving = await ServingCluster.StartAsync(
        [("tiny", TestModels.TinyGpt2Vocabulary with { BlockSize = 1024 }, 3, "busy test")],
        (_, o) =>
        {
            o.Node = "busy";
            o.Slots = 1;
            o.MaxQueue = 1;
            o.MaxNewTokens = 1000;
        });

    public Task DisposeAsync() => Serving.DisposeAsync().AsTask();
}

public sealed class BusyTests(BusyFixture fixture) : IClassFixture<BusyFixture>
{
    [Fact]
    public async Task AFullQueueAnswers429WithRetryAfterAndACancelledStreamFreesItsSlot()
    {
        var http = fixture.Serving.Api;
        var model = fixture.Serving.Grains.GetGrain<IModelGrain>("tiny@busy/cpu:0");
        var longRequest = new { model = "tiny", prompt = "We", max_tokens = 1000, stream = true, seed = 1 };

        // The first request holds the only slot (its headers arrive with its first token) ...
        using var running = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = JsonContent.Create(longRequest) },
            HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, running.StatusCode);
        // ... the second waits in the one queue place ...
        var waiting = http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = "We", max_tokens = 5, seed = 2 });
        for (var deadline = DateTime.UtcNow.AddSeconds(10); (await model.GetLoadAsync()).Queued == 0; await Task.Delay(10))
            Assert.True(DateTime.UtcNow < deadline, "the second request never queued");

        // ... so the third is refused at once, in OpenAI's error format.
        var refused = await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = "We", max_tokens = 5 });
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.True(refused.Headers.RetryAfter?.Delta > TimeSpan.Zero, "a 429 says when to retry");
        var error = (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Equal("model_busy", error.GetProperty("code").GetString());

        // Dropping the first stream frees its slot at the next step, and the queued request is served.
        running.Dispose();
        var served = await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.Equal(0, (await model.GetLoadAsync()).Running);
    }
}
