using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;

namespace OrleansGpt.Client;

/// <summary>
/// The operator's commands, over a silo's HTTP operator API with the operator key (Operator:ApiKey on the silos;
/// here --key or ORLEANSGPT_OPERATOR_KEY): cluster status, checkpoint versions, promote, rollback and fine-tunes.
/// Each prints the API's answer; an error answer prints its message and exits 1.
/// </summary>
public sealed class OpsCommand(Uri silo, string? key, TextWriter output) : IDisposable
{
    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true };
    private readonly HttpClient _http = Create(silo, key);

    /// <summary>GET /v1/cluster, printed as tables: silos, then replicas with version, queue and tokens/s.</summary>
    public async Task<int> StatusAsync()
    {
        var (ok, body) = await SendAsync(HttpMethod.Get, "/v1/cluster");
        if (!ok) return Fail(body);
        output.WriteLine("| silo | address | status |");
        output.WriteLine("|---|---|---|");
        foreach (var s in body.GetProperty("silos").EnumerateArray())
            output.WriteLine($"| {s.GetProperty("name")} | {s.GetProperty("address")} | {s.GetProperty("status")} |");
        output.WriteLine();
        output.WriteLine("| replica | version | running | queued | slots | tok/s |");
        output.WriteLine("|---|---|---:|---:|---:|---:|");
        foreach (var r in body.GetProperty("replicas").EnumerateArray())
            output.WriteLine($"| {r.GetProperty("key")} | {r.GetProperty("version")} | {r.GetProperty("running")} | {r.GetProperty("queued")} | {r.GetProperty("slots")} | " +
                (r.GetProperty("tokens_per_second").ValueKind == JsonValueKind.Number ? $"{r.GetProperty("tokens_per_second").GetDouble():F1}" : r.GetProperty("error").ToString()) + " |");
        output.WriteLine();
        foreach (var m in body.GetProperty("models").EnumerateArray())
            output.WriteLine($"{m.GetProperty("model")}: active version {m.GetProperty("active_version")}");
        return 0;
    }

    /// <summary>GET /v1/models/SIZE/versions: one line per version, the active one starred, those whose files retention
    /// removed marked "removed".</summary>
    public async Task<int> VersionsAsync(string size)
    {
        var (ok, body) = await SendAsync(HttpMethod.Get, $"/v1/models/{Uri.EscapeDataString(size)}/versions");
        if (!ok) return Fail(body);
        foreach (var v in body.GetProperty("data").EnumerateArray())
            output.WriteLine($"{(v.GetProperty("active").GetBoolean() ? "*" : " ")} {v.GetProperty("version")}{(v.TryGetProperty("removed", out var r) && r.GetBoolean() ? " (removed)" : "")}  {v.GetProperty("created")}  {v.GetProperty("kind")}: " +
                $"{v.GetProperty("description")}  (parent {Text(v, "parent")}, eval ppl {Text(v, "eval_perplexity")})");
        return 0;
    }

    /// <summary>
    /// A soak check for hot reloads: promotes the two newest live versions of <paramref name="size"/> in turn,
    /// <paramref name="times"/> times, and prints the silo's resident memory (VmRSS of <paramref name="pid"/>) after
    /// each, once the replaced engine has been released. Memory that keeps growing means reloads leak.
    /// </summary>
    public async Task<int> ReloadSoakAsync(string size, int times, int pid)
    {
        var (ok, body) = await SendAsync(HttpMethod.Get, $"/v1/models/{Uri.EscapeDataString(size)}/versions");
        if (!ok) return Fail(body);
        var live = body.GetProperty("data").EnumerateArray().Where(v => !(v.TryGetProperty("removed", out var r) && r.GetBoolean()))
            .Select(v => v.GetProperty("version").GetString()!).TakeLast(2).ToList();
        if (live.Count < 2)
            throw new InvalidOperationException($"'{size}' needs two versions to alternate between (it has {live.Count}): publish another first");
        long Rss() => long.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        long first = Rss();
        output.WriteLine($"before: {first / 1e6:F0} MB");
        var readings = new List<long>();
        for (int i = 1; i <= times; i++)
        {
            string version = live[i % 2];
            var (promoted, answer) = await SendAsync(HttpMethod.Post, $"/v1/models/{Uri.EscapeDataString(size)}/promote", new { version });
            if (!promoted) return Fail(answer);
            await Task.Delay(TimeSpan.FromSeconds(1)); // the replaced engine is released once idle, polled every 100 ms
            readings.Add(Rss());
            output.WriteLine($"promotion {i,2}: {version}, loaded in {answer.GetProperty("load_seconds").GetDouble():F2} s, resident {readings[^1] / 1e6:F0} MB");
        }
        output.WriteLine($"resident memory: before {first / 1e6:F0} MB, after promotion 2 {readings[Math.Min(1, readings.Count - 1)] / 1e6:F0} MB, " +
            $"after the last {readings[^1] / 1e6:F0} MB, highest {readings.Max() / 1e6:F0} MB");
        return 0;
    }

    public Task<int> PromoteAsync(string size, string version) => PrintAsync(HttpMethod.Post, $"/v1/models/{Uri.EscapeDataString(size)}/promote", new { version });

    public Task<int> RollbackAsync(string size) => PrintAsync(HttpMethod.Post, $"/v1/models/{Uri.EscapeDataString(size)}/rollback");

    public Task<int> FineTuneStartAsync(object request) => PrintAsync(HttpMethod.Post, "/v1/fine-tunes", request);

    public Task<int> FineTuneAsync(string size, string action) => action switch
    {
        "status" => PrintAsync(HttpMethod.Get, $"/v1/fine-tunes/{Uri.EscapeDataString(size)}"),
        "history" => PrintAsync(HttpMethod.Get, $"/v1/fine-tunes/{Uri.EscapeDataString(size)}/history"),
        "cancel" or "resume" => PrintAsync(HttpMethod.Post, $"/v1/fine-tunes/{Uri.EscapeDataString(size)}/{action}"),
        _ => throw new ArgumentException($"Unknown fine-tune action '{action}': start, status, history, cancel or resume"),
    };

    private async Task<int> PrintAsync(HttpMethod method, string path, object? body = null)
    {
        var (ok, answer) = await SendAsync(method, path, body);
        if (!ok) return Fail(answer);
        output.WriteLine(JsonSerializer.Serialize(answer, s_json));
        return 0;
    }

    private async Task<(bool Ok, JsonElement Body)> SendAsync(HttpMethod method, string path, object? body = null)
    {
        // Every POST is JSON, an empty one included: the API refuses other content types (cross-site requests).
        using var request = new HttpRequestMessage(method, path) { Content = method == HttpMethod.Get ? null : JsonContent.Create(body ?? new { }) };
        using var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        var json = text.Length > 0 ? JsonDocument.Parse(text).RootElement.Clone() : default;
        return (response.IsSuccessStatusCode, json);
    }

    private int Fail(JsonElement body)
    {
        string message = body.ValueKind == JsonValueKind.Object && body.TryGetProperty("error", out var e) ? e.GetProperty("message").GetString()! : body.ToString();
        output.WriteLine($"error: {message}");
        return 1;
    }

    private static string Text(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v.ToString() : "none";

    private static HttpClient Create(Uri silo, string? key)
    {
        var http = new HttpClient { BaseAddress = silo, Timeout = TimeSpan.FromMinutes(10) };
        if (!string.IsNullOrEmpty(key))
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return http;
    }

    public void Dispose() => _http.Dispose();
}
