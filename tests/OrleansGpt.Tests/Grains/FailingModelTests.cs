using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Grains;

/// <summary>
/// A checkpoint that passes the load-time probe yet fails on some inputs (NaN from position 20 on, as in a model never
/// trained that far): each failed request gets a clear error, other requests are served, and /healthz reports the
/// replica as failing once it fails several in a row.
/// </summary>
public sealed class FailingModelTests
{
    [Fact]
    public async Task AModelThatFailsItsRequestsSaysSoToTheCallerAndToHealthChecks()
    {
        await using var serving = await ServingCluster.StartAsync([("tiny", TestModels.TinyGpt2Vocabulary, 1, "broken past position 20")],
            (_, o) => (o.MaxPromptTokens, o.UnhealthyAfterFailures) = (40, 3),
            alter: (_, model) =>
            {
                using (no_grad())
                    model.named_parameters().First(p => p.name.EndsWith("wpe.weight", StringComparison.Ordinal)).parameter[20].fill_(float.NaN);
            });
        var http = serving.Api;
        int[] longPrompt = [.. Enumerable.Range(100, 25)];
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = new[] { 1, 2 }, max_tokens = 2 })).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode); // loaded, and the probe passed

        // A prompt reaching position 20: 500 with OpenAI's error body naming the replica and why.
        var failed = await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = longPrompt, max_tokens = 3 });
        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        var error = (await failed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Equal(("model_failure", "server_error"), (error.GetProperty("code").GetString(), error.GetProperty("type").GetString()));
        Assert.Contains("tiny@", error.GetProperty("message").GetString());
        Assert.Contains("not finite", error.GetProperty("message").GetString());

        // A stream that crosses position 20 after its first tokens ends with an error event, not silence.
        var events = await StreamAsync(http, new { model = "tiny", prompt = new[] { 1, 2, 3, 4, 5 }, max_tokens = 30, seed = 1, stream = true });
        Assert.True(events.Count > 1, string.Join("\n", events));
        Assert.DoesNotContain("[DONE]", events);
        Assert.Equal("model_failure", JsonDocument.Parse(events[^1]).RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode); // two failures: not yet failing

        // The third in a row: the replica is failing, and health says which, why and what to do.
        await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = longPrompt, max_tokens = 3 });
        var health = await http.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        var body = await health.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("failing", body.GetProperty("status").GetString());
        var replica = body.GetProperty("failing")[0];
        Assert.StartsWith("tiny@", replica.GetProperty("key").GetString());
        Assert.Equal(3, replica.GetProperty("consecutive_failures").GetInt32());
        Assert.Contains("not finite", replica.GetProperty("last_failure").GetString());
        Assert.Contains("rollback", body.GetProperty("hint").GetString());

        // Requests the model can compute are still served, and one served to its end makes the replica healthy again.
        var served = await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = new[] { 1, 2, 3 }, max_tokens = 5, seed = 2 });
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode);
    }

    [Fact]
    public async Task RoutingPrefersAReplicaThatIsNotFailing()
    {
        // Two replicas of one size on one silo; one has failed its last three requests (sent to it directly), the other
        // has not. Both are idle, so without the preference the router would pick either at random.
        await using var serving = await ServingCluster.StartAsync([("tiny", TestModels.TinyGpt2Vocabulary, 1, "broken past position 20")],
            (_, o) => (o.MaxPromptTokens, o.UnhealthyAfterFailures, o.ShareDevices, o.Devices, o.Replicas) = (40, 3, true, ["cpu:0", "cpu:1"], ["tiny@cpu:0", "tiny@cpu:1"]),
            alter: (_, model) =>
            {
                using (no_grad())
                    model.named_parameters().First(p => p.name.EndsWith("wpe.weight", StringComparison.Ordinal)).parameter[20].fill_(float.NaN);
            });
        var router = serving.Grains.GetGrain<OrleansGpt.Grains.Interfaces.IModelRouterGrain>(0);
        var keys = (await router.GetReplicasAsync()).Select(r => r.Key).ToList();
        Assert.Equal(2, keys.Count);
        var failing = serving.Grains.GetGrain<OrleansGpt.Grains.Interfaces.IModelGrain>(keys[0]);
        var request = new OrleansGpt.Grains.Interfaces.GenerationRequest([.. Enumerable.Range(100, 25)], new OrleansGpt.Grains.Interfaces.SamplingOptions(MaxTokens: 3));
        for (int i = 0; i < 3; i++)
            await Assert.ThrowsAsync<OrleansGpt.Grains.Interfaces.ModelFailureException>(() => TestModels.CollectAsync(failing.GenerateAsync(request)));
        Assert.True((await failing.GetLoadAsync()).Failing);

        for (int i = 0; i < 20; i++)
            Assert.Equal(keys[1], await router.PickReplicaAsync("tiny"));
    }

    private static async Task<List<string>> StreamAsync(HttpClient http, object body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = JsonContent.Create(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<string>();
        for (string? line; (line = await reader.ReadLineAsync()) is not null;)
            if (line.StartsWith("data: ", StringComparison.Ordinal))
                events.Add(line[6..]);
        return events;
    }
}
