using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace OrleansGpt.Tests.Grains;

/// <summary>A user's session over HTTP: read it, change its settings, and see bad changes refused with nothing lost.</summary>
[Collection(nameof(ClusterCollection))]
public sealed class SessionApiTests(ClusterFixture fixture)
{
    private readonly HttpClient _http = fixture.Api;

    [Fact]
    public async Task ASessionIsReadAndPatchedOverHttpAndKeepsItsHistory()
    {
        var fresh = await _http.GetFromJsonAsync<JsonElement>("/v1/sessions/patch-user");
        Assert.Equal(("CL", "tiny", 0.9), (Text(fresh, "category"), Text(fresh, "model"), fresh.GetProperty("settings").GetProperty("top_p").GetDouble()));
        Assert.Equal(0, fresh.GetProperty("history").GetArrayLength());

        var patched = await _http.PatchAsJsonAsync("/v1/sessions/patch-user", new { category = "cs.CV", top_k = 20, max_tokens = 8, seed = 11 });
        Assert.Equal(HttpStatusCode.OK, patched.StatusCode);
        var body = await patched.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(("CV", 20, 8, 11L, 0.9), (Text(body, "category"), body.GetProperty("settings").GetProperty("top_k").GetInt32(),
            body.GetProperty("settings").GetProperty("max_tokens").GetInt32(), body.GetProperty("settings").GetProperty("seed").GetInt64(),
            body.GetProperty("settings").GetProperty("top_p").GetDouble()));

        var written = await _http.PostAsJsonAsync("/v1/abstracts", new { title = "Patching Sessions", session = "patch-user" });
        var text = (await written.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("abstract").GetString();
        var read = await _http.GetFromJsonAsync<JsonElement>("/v1/sessions/patch-user");
        var entry = read.GetProperty("history")[0];
        Assert.Equal(("CV", "Patching Sessions", text, 11L), (entry.GetProperty("category").GetString(), entry.GetProperty("title").GetString(),
            entry.GetProperty("abstract").GetString(), entry.GetProperty("seed").GetInt64()));
        Assert.Matches("^[0-9a-f]{16}$", entry.GetProperty("version").GetString());

        // Bad settings are refused naming the field, and change nothing.
        foreach (var (patch, field) in new (object, string)[] { (new { top_p = 1.5 }, "top_p"), (new { category = "physics" }, "category"),
                     (new { model = "xl" }, "model"), (new { max_tokens = 100_000 }, "max_tokens") })
        {
            var refused = await _http.PatchAsJsonAsync("/v1/sessions/patch-user", patch);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Equal(field, (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("param").GetString());
        }
        Assert.Equal(read.GetProperty("settings").ToString(), (await _http.GetFromJsonAsync<JsonElement>("/v1/sessions/patch-user")).GetProperty("settings").ToString());
        var notJson = await _http.PatchAsync("/v1/sessions/patch-user", new StringContent("{top_p: 2", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, notJson.StatusCode);
    }

    [Fact]
    public async Task SessionIdsAreBounded()
    {
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.GetAsync("/v1/sessions/" + new string('x', 129))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.GetAsync("/v1/sessions/a%20b")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/v1/sessions/" + new string('x', 128))).StatusCode);
    }

    private static string? Text(JsonElement session, string name) => session.GetProperty("settings").GetProperty(name).GetString();
}
