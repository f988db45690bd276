using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using OrleansGpt.Grains;
using static Microsoft.Playwright.Assertions;

namespace OrleansGpt.Tests.Pages;

/// <summary>The chat page and the evaluation page in a real browser (Debian's chromium through Playwright).</summary>
public sealed class PageTests(BrowserFixture fixture) : IClassFixture<BrowserFixture>
{
    [Fact]
    public async Task AnAbstractStreamsForEachCategoryAndJoinsTheHistory()
    {
        var (context, page, errors) = await fixture.NewPageAsync();
        await using var _ = context;
        await OpenChatWithSettingsAsync(page);
        await SetAsync(page, "#max_tokens", "24");
        await page.RunAndWaitForResponseAsync(() => page.Locator("#model").SelectOptionAsync("tiny"), IsPatch);

        foreach (var category in new[] { "AI", "LG", "CL", "CV" })
        {
            await page.RunAndWaitForResponseAsync(() => page.Locator("#category").SelectOptionAsync(category), IsPatch);
            await page.Locator("#title").FillAsync($"Learning {category} Things");
            await page.Locator("#go").ClickAsync();
            await Expect(page.Locator("#status")).ToContainTextAsync("tokens/s");
            await Expect(page.Locator("#status")).ToContainTextAsync("checkpoint");
            await Expect(page.Locator("#output")).Not.ToBeEmptyAsync();
            await Expect(page.Locator("#history li").First).ToContainTextAsync($"[{category}] Learning {category} Things");
        }
        await Expect(page.Locator("#history li")).ToHaveCountAsync(4);

        // "Again with seed N" on the oldest (AI) writes the same text again, and goes back to its category.
        var oldest = page.Locator("#history li").Last;
        string text = await oldest.Locator(".abstract").InnerTextAsync();
        await oldest.GetByRole(AriaRole.Button).ClickAsync();
        await Expect(page.Locator("#history li")).ToHaveCountAsync(5);
        Assert.Equal(text, (await page.Locator("#output").InnerTextAsync()).Trim());
        await Expect(page.Locator("#category")).ToHaveValueAsync("AI");

        // The session grain holds the same history, each abstract with its seed.
        string session = await page.Locator("#session").InnerTextAsync();
        var state = await fixture.Serving.Api.GetFromJsonAsync<JsonElement>($"/v1/sessions/{session}");
        Assert.Equal(["AI", "LG", "CL", "CV", "AI"], state.GetProperty("history").EnumerateArray().Select(h => h.GetProperty("category").GetString()));
        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    [Fact]
    public async Task StopCancelsTheRequestAndFreesItsSlot()
    {
        var (context, page, errors) = await fixture.NewPageAsync();
        await using var _ = context;
        await OpenChatWithSettingsAsync(page);
        await page.RunAndWaitForResponseAsync(() => page.Locator("#model").SelectOptionAsync("small"), IsPatch);
        await SetAsync(page, "#max_tokens", "1000");
        await page.Locator("#title").FillAsync("A Very Long Abstract");
        await page.Locator("#go").ClickAsync();

        // Text arrives while the model is still writing (it streams), then Stop ends it.
        await Expect(page.Locator("#output")).Not.ToBeEmptyAsync();
        await Expect(page.Locator("#stop")).ToBeEnabledAsync();
        await page.Locator("#stop").ClickAsync();
        await Expect(page.Locator("#status")).ToHaveAttributeAsync("data-finish", "stopped");
        string stopped = await page.Locator("#output").InnerTextAsync();
        var engine = fixture.Serving.Cluster.Silos[0].ServiceProvider.GetRequiredService<ModelHost>().Get("small@cpu:0").Engine;
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (engine.Running > 0 && DateTime.UtcNow < deadline)
            await Task.Delay(50);
        Assert.Equal(0, engine.Running); // the silo freed the batch slot well before 1,000 tokens
        await Task.Delay(500);
        Assert.Equal(stopped, await page.Locator("#output").InnerTextAsync());
        Assert.True(errors.Count == 0, string.Join("\n", errors) + " | shown: " + await page.Locator("#error").InnerTextAsync());
        await Expect(page.Locator("#history li")).ToHaveCountAsync(0); // a stopped abstract is not recorded
        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    [Fact]
    public async Task SettingsSurviveAReload()
    {
        var (context, page, errors) = await fixture.NewPageAsync();
        await using var _ = context;
        await page.GotoAsync(fixture.BaseUrl + "/");
        await Expect(page.Locator("#model option")).ToHaveCountAsync(2);
        string session = await page.Locator("#session").InnerTextAsync();
        await page.Locator("#settings-box summary").ClickAsync();
        await SetAsync(page, "#top_p", "0.5");
        await SetAsync(page, "#seed", "7");
        await page.RunAndWaitForResponseAsync(() => page.Locator("#category").SelectOptionAsync("CV"), IsPatch);

        var saved = await fixture.Serving.Api.GetFromJsonAsync<JsonElement>($"/v1/sessions/{session}");
        Assert.True(saved.GetProperty("settings").GetProperty("seed").ValueKind == JsonValueKind.Number, saved.ToString());
        await page.ReloadAsync();
        await page.Locator("#settings-box summary").ClickAsync();
        await Expect(page.Locator("#top_p")).ToHaveValueAsync("0.5");
        await Expect(page.Locator("#seed")).ToHaveValueAsync("7");
        await Expect(page.Locator("#category")).ToHaveValueAsync("CV");
        Assert.Equal(session, await page.Locator("#session").InnerTextAsync());

        // Clearing the seed goes back to a random seed per abstract.
        await SetAsync(page, "#seed", "");
        var state = await fixture.Serving.Api.GetFromJsonAsync<JsonElement>($"/v1/sessions/{session}");
        Assert.Equal(JsonValueKind.Null, state.GetProperty("settings").GetProperty("seed").ValueKind);
        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    [Fact]
    public async Task AnErrorFromTheApiIsShownAsTheApiWordsIt()
    {
        var (context, page, errors) = await fixture.NewPageAsync();
        await using var _ = context;
        await OpenChatWithSettingsAsync(page);
        await SetAsync(page, "#max_tokens", "100000");
        await Expect(page.Locator("#error")).ToBeVisibleAsync();
        await Expect(page.Locator("#error")).ToContainTextAsync("max_tokens");
        await Expect(page.Locator("#max_tokens")).Not.ToHaveValueAsync("100000"); // the session kept its setting, and the page shows it
        // The browser reports the 400 itself; nothing else may go wrong.
        Assert.All(errors, e => Assert.Contains("400", e));
    }

    [Fact]
    public async Task AnEvaluationRoundIsStoredAndCountedAndAPairIsNeverShownTwice()
    {
        var (context, page, errors) = await fixture.NewPageAsync();
        await using var _ = context;
        await page.GotoAsync(fixture.BaseUrl + "/evaluate");
        await Expect(page.Locator("#judge")).ToBeVisibleAsync(new() { Timeout = 60_000 });
        string first = await page.Locator("#pair").InnerTextAsync();
        Assert.NotEqual(await page.Locator("#a").InnerTextAsync(), await page.Locator("#b").InnerTextAsync());

        // A reload shows the same pair again: nothing shown is lost.
        await page.ReloadAsync();
        await Expect(page.Locator("#judge")).ToBeVisibleAsync(new() { Timeout = 60_000 });
        Assert.Equal(first, await page.Locator("#pair").InnerTextAsync());

        foreach (var (name, value) in new[] { ("fluency_a", "4"), ("relevance_a", "5"), ("fluency_b", "2"), ("relevance_b", "1") })
            await page.Locator($"#{name}").SelectOptionAsync(value);
        await page.GetByLabel("A", new() { Exact = true }).CheckAsync();
        await page.Locator("#submit").ClickAsync();

        await Expect(page.Locator("#results tbody tr").First).ToContainTextAsync("All");
        await Expect(page.Locator("#results tbody tr").First.Locator("td").Nth(1)).ToHaveTextAsync("1");
        await Expect(page.Locator("#pair")).Not.ToHaveTextAsync(first, new() { Timeout = 60_000 });
        var results = await fixture.Serving.Api.GetFromJsonAsync<JsonElement>("/v1/evaluations");
        Assert.Equal(1, results.GetProperty("judgements").GetInt32());
        var overall = results.GetProperty("overall");
        Assert.Equal(1, overall.GetProperty("n").GetInt32());
        // The ratings were stored against the right abstract, whichever of A and B was the real one.
        var (real, generated) = (overall.GetProperty("real").GetProperty("fluency").GetDouble(), overall.GetProperty("generated").GetProperty("fluency").GetDouble());
        Assert.True((real, generated) is (4, 2) or (2, 4), $"{real} / {generated}");
        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    [Fact]
    public async Task ThePagesAreLabelledWorkFromTheKeyboardAndFitAPhone()
    {
        foreach (var (width, height, name) in new[] { (1280, 900, "desktop"), (390, 844, "phone") })
        {
            var (context, page, errors) = await fixture.NewPageAsync(width, height);
            await using var _ = context;
            foreach (var path in new[] { "/", "/evaluate" })
            {
                await page.GotoAsync(fixture.BaseUrl + path);
                await Expect(page.Locator("#model option")).ToHaveCountAsync(2);
                if (path == "/evaluate")
                    await Expect(page.Locator("#judge")).ToBeVisibleAsync(new() { Timeout = 60_000 });
                Assert.Equal(0, await page.EvaluateAsync<int>("() => [...document.querySelectorAll('input, select')].filter(e => e.labels.length === 0).length"));
                Assert.True(await page.EvaluateAsync<bool>("() => document.documentElement.scrollWidth <= window.innerWidth"), $"{path} scrolls sideways at {width} px");
                await page.ScreenshotAsync(new() { Path = Path.Combine(BrowserFixture.Screenshots, $"{(path == "/" ? "chat" : "evaluate")}-{name}.png"), FullPage = true });
            }

            // Keyboard only: Tab to the title, type it, Enter writes the abstract.
            await page.GotoAsync(fixture.BaseUrl + "/");
            await Expect(page.Locator("#model option")).ToHaveCountAsync(2);
            for (int i = 0; i < 10 && await page.EvaluateAsync<string>("() => document.activeElement.id") != "title"; i++)
                await page.Keyboard.PressAsync("Tab");
            Assert.Equal("title", await page.EvaluateAsync<string>("() => document.activeElement.id"));
            await page.Keyboard.TypeAsync("Typed Without A Mouse");
            await page.Keyboard.PressAsync("Enter");
            await Expect(page.Locator("#status")).ToContainTextAsync("tokens/s", new() { Timeout = 60_000 });
            Assert.True(errors.Count == 0, string.Join("\n", errors));
        }
    }

    [Fact]
    public async Task BadJudgementsAreRefusedWithTheFieldAndNothingIsRecorded()
    {
        var http = fixture.Serving.Api;
        var pair = await (await http.PostAsJsonAsync("/v1/evaluations/pairs", new { evaluator = "api-judge", model = "tiny" })).Content.ReadFromJsonAsync<JsonElement>();
        string id = pair.GetProperty("pair_id").GetString()!;
        int before = (await http.GetFromJsonAsync<JsonElement>("/v1/evaluations")).GetProperty("judgements").GetInt32();

        foreach (var (body, field) in new (object Body, string Field)[]
        {
            (new { evaluator = "api-judge", pair_id = id, picked = "a", fluency_a = 6, relevance_a = 3, fluency_b = 3, relevance_b = 3 }, "fluency_a"),
            (new { evaluator = "api-judge", pair_id = id, picked = "c", fluency_a = 3, relevance_a = 3, fluency_b = 3, relevance_b = 3 }, "picked"),
            (new { evaluator = "api-judge", pair_id = "tiny-99999", picked = "a", fluency_a = 3, relevance_a = 3, fluency_b = 3, relevance_b = 3 }, "pair_id"),
            (new { evaluator = "other-judge", pair_id = id, picked = "a", fluency_a = 3, relevance_a = 3, fluency_b = 3, relevance_b = 3 }, "pair_id"),
        })
        {
            var refused = await http.PostAsJsonAsync("/v1/evaluations", body);
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Equal(field, (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("param").GetString());
        }
        var judged = new { evaluator = "api-judge", pair_id = id, picked = "b", fluency_a = 3, relevance_a = 3, fluency_b = 3, relevance_b = 3 };
        Assert.Equal(System.Net.HttpStatusCode.Created, (await http.PostAsJsonAsync("/v1/evaluations", judged)).StatusCode);
        var twice = await http.PostAsJsonAsync("/v1/evaluations", judged);
        Assert.Contains("already judged", (await twice.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("message").GetString());
        Assert.Equal(before + 1, (await http.GetFromJsonAsync<JsonElement>("/v1/evaluations")).GetProperty("judgements").GetInt32());
        // The next pair is another paper.
        var next = await (await http.PostAsJsonAsync("/v1/evaluations/pairs", new { evaluator = "api-judge", model = "tiny" })).Content.ReadFromJsonAsync<JsonElement>();
        Assert.NotEqual(id, next.GetProperty("pair_id").GetString());
    }

    [Theory]
    [InlineData(5, 10, 0.2366, 0.7634)]
    [InlineData(0, 10, 0.0, 0.2775)]
    [InlineData(10, 10, 0.7225, 1.0)]
    [InlineData(1, 1, 0.20655, 1.0)]
    public void FoundRealRatesCarryWilsonsInterval(int found, int n, double low, double high)
    {
        var (l, h) = OrleansGpt.Silo.Api.EvaluationResults.Wilson(found, n);
        Assert.Equal(low, l, 3);
        Assert.Equal(high, h, 3);
    }

    /// <summary>The chat page, loaded (the served sizes listed) with its settings open.</summary>
    private async Task OpenChatWithSettingsAsync(IPage page)
    {
        await page.GotoAsync(fixture.BaseUrl + "/");
        await Expect(page.Locator("#model option")).ToHaveCountAsync(2);
        await page.Locator("#settings-box summary").ClickAsync();
    }

    private static bool IsPatch(IResponse response) => response.Request.Method == "PATCH" && response.Url.Contains("/v1/sessions/", StringComparison.Ordinal);

    /// <summary>Types a value into a settings field and leaves it, as a person would; waits for the session to save it.</summary>
    private static async Task SetAsync(IPage page, string selector, string value)
    {
        await page.Locator(selector).FillAsync(value);
        await page.RunAndWaitForResponseAsync(() => page.Locator(selector).DispatchEventAsync("change"), IsPatch);
    }
}
