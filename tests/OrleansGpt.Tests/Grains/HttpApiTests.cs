using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using OrleansGpt.Silo.Api;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Tests.Grains;

/// <summary>The OpenAI-compatible API through a real HTTP endpoint.</summary>
[Collection(nameof(ClusterCollection))]
public sealed class HttpApiTests(ClusterFixture fixture)
{
    private readonly HttpClient _http = fixture.Api;

    [Fact]
    public async Task ACompletionReturnsOpenAisShapeWithUsage()
    {
        var response = await _http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = "We propose a method", max_tokens = 12, seed = 5 });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", body.GetProperty("id").GetString());
        Assert.Equal("tiny", body.GetProperty("model").GetString());
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Contains(choice.GetProperty("finish_reason").GetString(), new[] { "stop", "length" });
        var usage = body.GetProperty("usage");
        Assert.Equal(Gpt2Tokenizer.Shared.Encode("We propose a method").Length, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.InRange(usage.GetProperty("completion_tokens").GetInt32(), 1, 12);
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + usage.GetProperty("completion_tokens").GetInt32(), usage.GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task StreamingSendsServerSentEventsThatAddUpToTheWholeCompletion()
    {
        var request = new { model = "tiny", prompt = "Deep residual learning", max_tokens = 15, seed = 9 };
        var whole = await (await _http.PostAsJsonAsync("/v1/completions", request)).Content.ReadFromJsonAsync<JsonElement>();

        var response = await _http.PostAsJsonAsync("/v1/completions", new { request.model, request.prompt, request.max_tokens, request.seed, stream = true, stream_options = new { include_usage = true } });
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToList();
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());
        var usage = chunks[^1].GetProperty("usage"); // include_usage: a last chunk with no choices
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
        string streamed = string.Concat(chunks[..^1].Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()));
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), streamed);
        Assert.Equal(whole.GetProperty("usage").GetProperty("total_tokens").GetInt32(), usage.GetProperty("total_tokens").GetInt32());
        Assert.NotNull(chunks[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task AStopStringEndsTheTextBeforeIt()
    {
        var request = new { model = "tiny", prompt = "In this paper", max_tokens = 30, seed = 21 };
        string full = (await (await _http.PostAsJsonAsync("/v1/completions", request)).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("choices")[0].GetProperty("text").GetString()!;
        string stop = full.Substring(full.Length / 2, 3);
        var stopped = (await (await _http.PostAsJsonAsync("/v1/completions", new { request.model, request.prompt, request.max_tokens, request.seed, stop })).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("choices")[0];
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], stopped.GetProperty("text").GetString());
        Assert.Equal("stop", stopped.GetProperty("finish_reason").GetString());
    }

    [Theory]
    [InlineData("""{"model":"huge","prompt":"x"}""", 404, "model", "model_not_found")]
    [InlineData("""{"model":"tiny","prompt":"x","top_p":1.5}""", 400, "top_p", null)]
    [InlineData("""{"model":"tiny","prompt":"x","n":2}""", 400, "n", null)]
    [InlineData("""{"model":"tiny","prompt":{"a":1}}""", 400, "prompt", null)]
    [InlineData("""{"model":"tiny","prompt":""", 400, "prompt", null)]
    public async Task BadRequestsGetOpenAisErrorBody(string json, int status, string param, string? code)
    {
        var response = await _http.PostAsync("/v1/completions", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(status, (int)response.StatusCode);
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
    }

    [Fact]
    public async Task ModelsAndHealthDescribeWhatIsServed()
    {
        await _http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = "x", max_tokens = 1 }); // loads it
        var models = await _http.GetFromJsonAsync<JsonElement>("/v1/models");
        Assert.Contains("tiny", models.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()));
        var health = await _http.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Contains("untrained: grain test model", await health.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task MetricsAreServedInPrometheusTextFormat()
    {
        await _http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = "We", max_tokens = 4, seed = 1 });
        var response = await _http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        string text = await response.Content.ReadAsStringAsync();
        foreach (var name in new[] { "orleansgpt_queue_depth", "orleansgpt_running_batch", "orleansgpt_generated_tokens", "orleansgpt_time_to_first_token_seconds_bucket", "orleansgpt_inter_token_latency_seconds_bucket" })
            Assert.Contains(name, text);
        Assert.Contains("model=\"tiny@test/cpu:0\"", text);
    }

    [Fact]
    public async Task AbstractsCanUseASessionsSettingsAndHistory()
    {
        var direct = await (await _http.PostAsJsonAsync("/v1/abstracts", new { category = "CV", title = "Seeing Cats", settings = new { max_tokens = 8, seed = 3 } })).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("tiny", direct.GetProperty("model").GetString());
        Assert.False(string.IsNullOrWhiteSpace(direct.GetProperty("abstract").GetString()));

        var session = fixture.Grains.GetGrain<OrleansGpt.Grains.Interfaces.ISessionGrain>("http-user");
        await session.UpdateSettingsAsync(new OrleansGpt.Grains.Interfaces.SessionSettings("AI", "tiny", new OrleansGpt.Grains.Interfaces.SamplingOptions(MaxTokens: 8)));
        var streamed = await _http.PostAsJsonAsync("/v1/abstracts", new { title = "Knowledge Patterns", session = "http-user", stream = true });
        Assert.EndsWith("data: [DONE]\n\n", await streamed.Content.ReadAsStringAsync());
        Assert.Equal("Knowledge Patterns", Assert.Single(await session.GetHistoryAsync()).Title);

        var bad = await _http.PostAsJsonAsync("/v1/abstracts", new { category = "cs.RO", title = "Robots" });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
    }

    [Theory]
    [InlineData(new[] { "Hel", "lo wor", "ld" }, new[] { "o w" }, "Hell", true)]
    [InlineData(new[] { "abc", "def" }, new[] { "xyz" }, "abcdef", false)]
    [InlineData(new[] { "one\n", "\ntwo" }, new[] { "\n\n", "two" }, "one", true)]
    [InlineData(new[] { "a", "b", "c" }, new[] { "bx" }, "abc", false)]
    public void StopStringsAreFoundAcrossChunksAndNeverHalfSent(string[] pieces, string[] stops, string expected, bool stopped)
    {
        var filter = new StopSequences(stops);
        var sent = new List<string>();
        foreach (var piece in pieces)
        {
            string ready = filter.Push(piece);
            Assert.All(stops, s => Assert.DoesNotContain(s, string.Concat(sent) + ready));
            sent.Add(ready);
        }
        sent.Add(filter.Flush());
        Assert.Equal(expected, string.Concat(sent));
        Assert.Equal(stopped, filter.Stopped);
    }
}
