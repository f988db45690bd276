using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Tests.Grains;

/// <summary>Edges of the HTTP API found by probing it (issue 9): each answers with a clear error and changes nothing.</summary>
[Collection(nameof(ClusterCollection))]
public sealed class ApiEdgeTests(ClusterFixture fixture)
{
    private readonly HttpClient _http = fixture.Api;

    [Fact]
    public async Task RequestsThatAreNotJsonAreRefusedSoNoOtherSiteCanSendThem()
    {
        // A web page can send text/plain or form posts to 127.0.0.1 without asking; it cannot send application/json.
        foreach (var (path, body) in new[] { ("/v1/fine-tunes", "{\"model\":\"tiny\",\"data_directory\":\"/tmp\"}"), ("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\"}"),
                     ("/v1/models/operated/rollback", ""), ("/v1/fine-tunes/tiny/cancel", "") })
        {
            foreach (var type in new[] { "text/plain", "application/x-www-form-urlencoded" })
            {
                var refused = await _http.PostAsync(path, new StringContent(body, Encoding.UTF8, type));
                Assert.Equal(HttpStatusCode.UnsupportedMediaType, refused.StatusCode);
                Assert.Contains("application/json", (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("message").GetString());
            }
            var bare = await _http.SendAsync(new HttpRequestMessage(HttpMethod.Post, path));
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, bare.StatusCode);
        }
        var patch = await _http.PatchAsync("/v1/sessions/edge-user", new StringContent("{\"top_p\":0.5}", Encoding.UTF8, "text/plain"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, patch.StatusCode);
        Assert.Equal(0.9, (await _http.GetFromJsonAsync<JsonElement>("/v1/sessions/edge-user")).GetProperty("settings").GetProperty("top_p").GetDouble());
        Assert.Equal(TrainingState.Idle, (await fixture.Grains.GetGrain<ITrainingGrain>("operated").GetStatusAsync()).State);
        // GETs need no body and stay as they were.
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/v1/models")).StatusCode);
    }

    [Theory]
    [InlineData(1e-30)]
    [InlineData(0.001)]
    [InlineData(1e6)]
    [InlineData(double.PositiveInfinity)]
    public async Task TemperaturesOutsideTheSupportedRangeAreRefused(double temperature)
    {
        string json = $"{{\"model\":\"tiny\",\"prompt\":\"We\",\"max_tokens\":2,\"temperature\":{(double.IsInfinity(temperature) ? "1e400" : temperature.ToString("R", System.Globalization.CultureInfo.InvariantCulture))}}}";
        var refused = await _http.PostAsync("/v1/completions", new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        var error = (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Contains("temperature", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task TextTooLongForThePromptLimitIsRefusedBeforeItIsTokenised()
    {
        // One unbroken 200,000-character word: byte-level BPE on it costs seconds, so the limit is checked first.
        string word = new('x', 200_000);
        var prompt = await _http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = word, max_tokens = 2 });
        Assert.Equal(HttpStatusCode.BadRequest, prompt.StatusCode);
        var error = (await prompt.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Equal("prompt", error.GetProperty("param").GetString());
        Assert.Contains("bytes of UTF-8, which cannot fit in the limit of 48 tokens", error.GetProperty("message").GetString());

        var title = await _http.PostAsJsonAsync("/v1/abstracts", new { category = "CL", title = new string('y', 100_000) });
        Assert.Equal(HttpStatusCode.BadRequest, title.StatusCode);
        error = (await title.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Contains("The title is too long", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task ABodyOverTheLimitIsRefusedWith413BeforeItIsRead()
    {
        // Api:MaxRequestBodyBytes is 1 MiB: a 2 MB prompt is refused by size, with OpenAI's error body naming the setting.
        // The request says its length and waits for "100 Continue" before sending the body, as a client sending
        // megabytes should: the server refuses from the length alone, and no body is in flight when it closes the
        // connection (a body still being written then reads as a broken pipe, not a 413, on the client's side).
        string json = JsonSerializer.Serialize(new { model = "tiny", prompt = new string('x', 2_000_000), title = "t" });
        foreach (var path in new[] { "/v1/completions", "/v1/abstracts", "/v1/fine-tunes" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
            request.Headers.ExpectContinue = true;
            var refused = await _http.SendAsync(request);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, refused.StatusCode);
            var error = (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
            Assert.Equal("request_too_large", error.GetProperty("code").GetString());
            Assert.Contains("Api:MaxRequestBodyBytes", error.GetProperty("message").GetString());
        }
        // Just under the limit is read, and refused for what it says.
        var under = await _http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = new string('x', 1_000_000), max_tokens = 2 });
        Assert.Equal(HttpStatusCode.BadRequest, under.StatusCode);
    }

    [Fact]
    public async Task LogitBiasBansAndForcesTokensAsOpenAIDefinesIt()
    {
        async Task<int[]> Tokens(object body)
        {
            var response = await _http.PostAsJsonAsync("/v1/completions", body);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            string text = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("choices")[0].GetProperty("text").GetString()!;
            return Training.Text.Gpt2Tokenizer.Shared.Encode(text);
        }
        int[] prompt = [464, 3290, 286];
        int greedyFirst = (await Tokens(new { model = "tiny", prompt, max_tokens = 1, temperature = 0 }))[0];
        int[] banned = await Tokens(new { model = "tiny", prompt, max_tokens = 1, temperature = 0, logit_bias = new Dictionary<string, int> { [greedyFirst.ToString()] = -100 } });
        Assert.NotEqual(greedyFirst, banned[0]);
        // +100 on one token makes it (all but) certain, even when sampling at temperature 1.
        int[] forced = await Tokens(new { model = "tiny", prompt, max_tokens = 5, seed = 3, logit_bias = new Dictionary<string, int> { ["1212"] = 100 } });
        Assert.All(forced, t => Assert.Equal(1212, t));

        foreach (var bad in new object[] { new Dictionary<string, int> { ["abc"] = 1 }, new Dictionary<string, int> { ["99999"] = 1 }, new Dictionary<string, int> { ["5"] = 101 } })
        {
            var refused = await _http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt, max_tokens = 1, logit_bias = bad });
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Equal("logit_bias", (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("param").GetString());
        }
    }

    [Fact]
    public async Task ATitleOverThePromptLimitIsRefusedNamingTheLimit()
    {
        // 60 ordinary words: short enough in bytes to be tokenised, too many tokens for the 48-token prompt limit.
        string title = string.Join(" ", Enumerable.Range(0, 60).Select(i => "word"));
        foreach (var body in new object[] { new { category = "CL", title, model = "tiny" }, new { category = "CL", title = "  ", model = "tiny" } })
        {
            var refused = await _http.PostAsJsonAsync("/v1/abstracts", body);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            var error = (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
            Assert.Equal("title", error.GetProperty("param").GetString());
        }
        var tooLong = await _http.PostAsJsonAsync("/v1/abstracts", new { category = "CL", title, model = "tiny" });
        Assert.Contains("48", (await tooLong.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("message").GetString());
    }

    [Fact]
    public async Task AbstractsBanTheSeparatorAfterThePrompt()
    {
        var plan = await fixture.Grains.GetGrain<IAbstractWriterGrain>(0).PrepareAsync(new AbstractRequest("CL", "Separators", "tiny", new SamplingOptions()));
        Assert.Equal(-100, plan.Request.Sampling.LogitBias![Training.Text.Gpt2Tokenizer.Separator]);
        // A caller that says something about <|sep|> itself decides.
        var own = new SamplingOptions(LogitBias: new Dictionary<int, double> { [Training.Text.Gpt2Tokenizer.Separator] = 5 });
        var planned = await fixture.Grains.GetGrain<IAbstractWriterGrain>(0).PrepareAsync(new AbstractRequest("CL", "Separators", "tiny", own));
        Assert.Equal(5, planned.Request.Sampling.LogitBias![Training.Text.Gpt2Tokenizer.Separator]);
    }

    [Fact]
    public async Task TheMaxTokensLimitNamesMaxTokens()
    {
        var refused = await _http.PostAsJsonAsync("/v1/abstracts", new { category = "CL", title = "Limits", settings = new { max_tokens = 10_000 } });
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Equal("max_tokens", (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("param").GetString());
    }

    [Fact]
    public async Task ASessionRequestRefusesSettingsItWouldIgnore()
    {
        foreach (var body in new object[] { new { title = "T", session = "edge-session", settings = new { top_p = 0.5 } }, new { title = "T", session = "edge-session", category = "CV" } })
        {
            var refused = await _http.PostAsJsonAsync("/v1/abstracts", body);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Contains("PATCH /v1/sessions/edge-session", await refused.Content.ReadAsStringAsync());
        }
        Assert.Empty(await fixture.Grains.GetGrain<ISessionGrain>("edge-session").GetHistoryAsync());
    }

    [Fact]
    public async Task TextThatIsNotValidUnicodeIsRefusedNamingTheField()
    {
        foreach (var (path, json, field) in new[]
        {
            ("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"a \\ud800 b\",\"max_tokens\":2}", "prompt"),
            ("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"ab\",\"max_tokens\":2,\"stop\":[\"\\udc00\"]}", "stop"),
            ("/v1/abstracts", "{\"category\":\"CL\",\"title\":\"\\ud83d title\"}", "title"),
        })
        {
            var refused = await _http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            var error = (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
            Assert.Equal(field, error.GetProperty("param").GetString());
            Assert.Contains("surrogate", error.GetProperty("message").GetString());
        }
        // Bytes that are not UTF-8 at all.
        var bytes = new ByteArrayContent([.. "{\"model\":\"tiny\",\"prompt\":\""u8.ToArray(), 0xC3, 0x28, .. "\"}"u8.ToArray()]);
        bytes.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        var notUtf8 = await _http.PostAsync("/v1/completions", bytes);
        Assert.Equal(HttpStatusCode.BadRequest, notUtf8.StatusCode);
        Assert.Contains("UTF-8", (await notUtf8.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("message").GetString(), StringComparison.OrdinalIgnoreCase);
    }
}
