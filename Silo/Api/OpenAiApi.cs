using System.Text.Json;
using System.Text.Json.Serialization;
using OrleansGpt.Grains;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Silo.Api;

/// <summary>The HTTP API: OpenAI-compatible completions, abstracts, models and health.</summary>
/// <remarks>
/// Compatible with OpenAI's legacy Completions API (POST /v1/completions): model, prompt, max_tokens (default
/// 16), temperature, top_p, seed, stop, logit_bias, n = 1, stream as Server-Sent Events in OpenAI's chunk format ending
/// with "data: [DONE]", usage counts and OpenAI's error body, so existing OpenAI clients work against it.
/// "model" names a checkpoint size (tiny, small, ...); each request goes to the size's least-loaded replica, as
/// the router grain picks it.
/// </remarks>
public static class OpenAiApi
{
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    // Engine setting names as the API spells them.
    private static readonly Dictionary<string, string> s_parameterNames = new(StringComparer.Ordinal)
    {
        ["TopP"] = "top_p", ["TopK"] = "top_k", ["Temperature"] = "temperature", ["MaxNewTokens"] = "max_tokens",
        ["RepetitionPenalty"] = "repetition_penalty", ["LogitBias"] = "logit_bias", ["prompt"] = "prompt", ["title"] = "title", ["text"] = "category",
    };

    public static IEndpointRouteBuilder MapOrleansGptApi(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapPrometheusScrapingEndpoint("/metrics");
        var app = endpoints.MapGroup("").ReportUnexpectedErrors();
        app.MapPost("/v1/completions", Completions).RequireJsonBodies();
        app.MapPost("/v1/abstracts", Abstracts).RequireJsonBodies();
        // Each size with its replicas, the version each serves, how that version was made and its whole lineage.
        app.MapGet("/v1/models", async (IGrainFactory grains, HttpContext http) =>
        {
            var replicas = await grains.GetGrain<IModelRouterGrain>(0).GetReplicasAsync(http.RequestAborted);
            var infos = await Task.WhenAll(replicas.Select(async r =>
            {
                try
                {
                    return await grains.GetGrain<IModelGrain>(r.Key).GetInfoAsync(http.RequestAborted);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    return null; // a replica that cannot load, or whose silo is leaving, is listed without a version
                }
            }));
            var lineages = await Task.WhenAll(replicas.Select((r, i) => infos[i] is { } info
                ? grains.GetGrain<ICheckpointRegistryGrain>(r.Size).GetLineageAsync(info.Version, http.RequestAborted).AsTask()
                : Task.FromResult<IReadOnlyList<CheckpointVersion>>([])));
            return Results.Json(new
            {
                @object = "list",
                data = replicas.Select((r, i) => (Replica: r, Info: infos[i], Lineage: lineages[i])).GroupBy(x => x.Replica.Size).Select(g => new
                {
                    id = g.Key,
                    @object = "model",
                    created = 0,
                    owned_by = "orleansgpt",
                    replicas = g.Select(x => new
                    {
                        key = x.Replica.Key,
                        version = x.Info?.Version,
                        provenance = x.Info?.Provenance,
                        lineage = x.Lineage.Select(v => new { v.Version, v.Kind, v.Description, v.Data, v.Settings, v.TokensSeen, v.EvalPerplexity, v.Created, v.Removed }),
                    }),
                }),
            }, Json);
        });
        app.MapSessionApi();
        app.MapEvaluationApi();
        app.MapOperatorApi();
        app.MapGet("/healthz", Health);
        return endpoints;
    }

    /// <summary>
    /// GET /healthz: 200 while this silo serves at least one model and none is failing; 503 with the reason otherwise:
    /// nothing loaded yet (and how to get a checkpoint), or a replica whose model failed its last requests (which, the
    /// version, why, and how to roll it back). A load balancer or Kubernetes readiness probe takes the silo out of
    /// service until an operator acts.
    /// </summary>
    private static IResult Health(ModelHost host)
    {
        var failing = host.Failing();
        if (failing.Count > 0)
            return Results.Json(new
            {
                status = "failing",
                failing = failing.Select(f => new { f.Info.Key, f.Info.Version, consecutive_failures = f.ConsecutiveFailures, last_failure = f.LastFailure }),
                hint = $"the model fails the requests it is given; roll back: POST /v1/models/{failing[0].Info.Size}/rollback (Client -- ops rollback {failing[0].Info.Size})",
            }, Json, statusCode: StatusCodes.Status503ServiceUnavailable);
        if (host.Loaded.Count > 0)
            return Results.Json(new { status = "ok", models = host.Loaded.Select(m => new { m.Key, m.Version, m.Provenance }) }, Json);
        return Results.Json(new
        {
            status = "no model loaded",
            hint = host.AvailableSizes().Count > 0
                ? "checkpoints are loading"
                : $"no checkpoint under {host.CheckpointDirectory}: train one (dotnet run --project Training -- train --data DIR --out {host.CheckpointDirectory}/tiny ...) or copy a Hugging Face GPT-2 directory there",
        }, Json, statusCode: StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>POST /v1/completions.</summary>
    private static async Task Completions(HttpContext http, IGrainFactory grains, ModelHost host)
    {
        var request = await ReadAsync<CompletionRequest>(http);
        if (request is null) return;
        if (request.N is not (null or 1)) { await Error(http, 400, "Only n = 1 is supported", "n"); return; }
        if ((NotUnicode(request.Prompt, "prompt") ?? NotUnicode(request.Stop, "stop")) is { } bad) { await Error(http, 400, bad.Message, bad.Param); return; }
        int[]? prompt;
        try
        {
            prompt = ReadPrompt(request.Prompt, host.MaxPromptTokens);
        }
        catch (ArgumentException e)
        {
            await Error(http, 400, e.Message.Split(" (Parameter ")[0], "prompt");
            return;
        }
        if (prompt is null) { await Error(http, 400, "prompt must be a string, an array of one string, or an array of token ids", "prompt"); return; }
        string[]? stops = ReadStops(request.Stop);
        if (stops is null) { await Error(http, 400, "stop must be a string or an array of up to 4 non-empty strings", "stop"); return; }

        if (ReadLogitBias(request.LogitBias) is not { } bias) { await Error(http, 400, "logit_bias maps token ids (as strings, e.g. \"50256\") to biases from -100 to 100", "logit_bias"); return; }
        var sampling = new SamplingOptions(request.TopP ?? 1.0, request.TopK ?? 0, request.Temperature ?? 1.0, request.MaxTokens ?? 16, request.Seed, bias.Count == 0 ? null : bias);
        try
        {
            ModelGrain.ToSettings(sampling); // validated at the edge, where the error can name the parameter
        }
        catch (ArgumentException e)
        {
            await Failure(http, e);
            return;
        }
        // The size must be served (404 naming the served sizes otherwise); the resilient path below picks the replica.
        if (!await ServedAsync(http, grains, request.Model)) return;
        string size = request.Model!;
        string id = "cmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var filter = new StopSequences(stops);
        using var stopped = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        // Through the resilient path: a replica lost before the first token is replaced by another.
        var chunks = grains.GenerateAsync(size, new GenerationRequest(prompt, sampling), stopped.Token);
        int completionTokens = 0;
        string? finish = null;
        string? version = null;
        var text = new System.Text.StringBuilder();
        bool stream = request.Stream == true;
        try
        {
            bool relayed = await RelayAsync(http, chunks, stream, async chunk =>
            {
                completionTokens += chunk.Tokens.Length;
                version ??= chunk.Version;
                string piece = filter.Push(chunk.Text) + (chunk.FinishReason is not null ? filter.Flush() : "");
                finish = filter.Stopped ? "stop" : chunk.FinishReason;
                if (stream && (piece.Length > 0 || finish is not null))
                    await Event(http, new CompletionChunk(id, "text_completion", created, size, [new Choice(piece, 0, null, finish)], null, version));
                else
                    text.Append(piece);
                if (!filter.Stopped)
                    return true;
                stopped.Cancel(); // frees the batch slot now, not at max_tokens
                return false;
            }, stopped.Token);
            if (!relayed)
                return;
        }
        catch (OperationCanceledException) when (filter.Stopped || http.RequestAborted.IsCancellationRequested)
        {
        }

        var usage = new Usage(prompt.Length, completionTokens, prompt.Length + completionTokens);
        if (stream)
        {
            if (request.StreamOptions?.IncludeUsage == true)
                await Event(http, new CompletionChunk(id, "text_completion", created, size, [], usage, version));
            await http.Response.WriteAsync("data: [DONE]\n\n", http.RequestAborted);
            return;
        }
        await http.Response.WriteAsJsonAsync(new CompletionChunk(id, "text_completion", created, size, [new Choice(text.ToString(), 0, null, finish)], usage, version), Json);
    }

    /// <summary>POST /v1/abstracts: {category, title, settings, stream, session}. With a session, the session
    /// grain's settings apply and the abstract joins its history.</summary>
    private static async Task Abstracts(HttpContext http, IGrainFactory grains)
    {
        var request = await ReadAsync<AbstractsRequest>(http);
        if (request is null) return;
        if (string.IsNullOrWhiteSpace(request.Title)) { await Error(http, 400, "title is required", "title"); return; }
        if (Gpt2Tokenizer.UnpairedSurrogate(request.Title) is int at) { await Error(http, 400, NotUnicodeMessage("title", at), "title"); return; }
        if (request.Seed is not null && request.Session is not { Length: > 0 }) { await Error(http, 400, "seed at the top level goes with a session; without one, send settings.seed", "seed"); return; }
        if (request.Session is { Length: > 0 } named && (request.Settings is not null || request.Category is not null || request.Model is not null))
        {
            // A session's abstracts use the session's settings; silently ignoring these would mislead the caller.
            await Error(http, 400, $"A request with a session uses that session's category, model and settings; change them with PATCH /v1/sessions/{named}",
                request.Settings is not null ? "settings" : request.Category is not null ? "category" : "model");
            return;
        }
        IAsyncEnumerable<GeneratedChunk> pieces;
        string? model;
        try
        {
            if (request.Session is { Length: > 0 } session)
            {
                var grain = grains.GetGrain<ISessionGrain>(session);
                model = (await grain.GetSettingsAsync(http.RequestAborted)).ModelSize;
                pieces = grain.WriteAbstractAsync(request.Title, request.Seed, http.RequestAborted);
            }
            else
            {
                var s = request.Settings ?? new AbstractSettings(null, null, null, null, null);
                var sampling = new SamplingOptions(s.TopP ?? 0.9, s.TopK ?? 0, s.Temperature ?? 1.0, s.MaxTokens ?? 256, s.Seed);
                // Without a model, a new session's size if the cluster serves it, else the first size it serves.
                if ((model = request.Model) is null)
                {
                    var sizes = (await grains.GetGrain<IModelRouterGrain>(0).GetReplicasAsync(http.RequestAborted)).Select(r => r.Size).ToList();
                    model = sizes.Contains(SessionSettings.Default.ModelSize) ? SessionSettings.Default.ModelSize : sizes.FirstOrDefault() ?? SessionSettings.Default.ModelSize;
                }
                pieces = grains.WriteAbstractAsync(new AbstractRequest(request.Category ?? "", request.Title, model, sampling), http.RequestAborted);
            }
        }
        catch (ArgumentException e)
        {
            await Failure(http, e);
            return;
        }

        var text = new System.Text.StringBuilder();
        string? version = null, finish = null;
        int tokens = 0;
        bool relayed = await RelayAsync(http, pieces, request.Stream == true, async chunk =>
        {
            version ??= chunk.Version;
            finish = chunk.FinishReason ?? finish;
            tokens += chunk.Tokens.Length;
            if (request.Stream == true && (chunk.Text.Length > 0 || chunk.FinishReason is not null))
                await Event(http, new { text = chunk.Text, finish_reason = chunk.FinishReason, version = chunk.Version, tokens = chunk.Tokens.Length });
            else
                text.Append(chunk.Text);
            return true;
        }, http.RequestAborted);
        if (!relayed)
            return;
        if (request.Stream == true)
            await http.Response.WriteAsync("data: [DONE]\n\n", http.RequestAborted);
        else
            await http.Response.WriteAsJsonAsync(new { request.Category, title = request.Title, model, @abstract = text.ToString().Trim(), finish_reason = finish, tokens, version }, Json);
    }

    /// <summary>
    /// Hands each item of <paramref name="source"/> to <paramref name="each"/> (which returns false to stop early).
    /// The first item is awaited before anything is written, so a request the model refuses (bad input, busy)
    /// still gets a proper HTTP error instead of a broken event stream; only then does a streamed response open
    /// its event stream. Returns false when the request was refused and the error already written.
    /// </summary>
    private static async Task<bool> RelayAsync<T>(HttpContext http, IAsyncEnumerable<T> source, bool stream, Func<T, Task<bool>> each, CancellationToken cancellationToken)
    {
        await using var items = source.GetAsyncEnumerator(cancellationToken);
        try
        {
            bool more = await items.MoveNextAsync();
            if (stream)
                StartEventStream(http);
            while (more && await each(items.Current))
                more = await items.MoveNextAsync();
            return true;
        }
        catch (Exception e) when (!http.Response.HasStarted && e is ArgumentException or ModelBusyException)
        {
            await Failure(http, e);
            return false;
        }
        catch (ModelFailureException e)
        {
            // The model failed this request (not the caller's input, not a lost silo): 500 with the reason, or an
            // error event on an open stream. Sending it again will likely fail the same way until the model changes.
            if (!http.Response.HasStarted)
                await Error(http, 500, e.Message, null, "model_failure", "server_error");
            else if (stream)
                await Event(http, ErrorBody(e.Message, null, "model_failure", "server_error"));
            return false;
        }
        catch (GenerationInterruptedException e)
        {
            // The replica's silo was lost mid-answer. Before any byte went out: 503 with Retry-After; on an open event
            // stream: an error event (OpenAI's error body), then the stream ends without [DONE].
            if (!http.Response.HasStarted)
            {
                http.Response.Headers.RetryAfter = "1";
                await Error(http, 503, e.Message, null, "replica_lost", "server_error");
            }
            else if (stream)
            {
                await Event(http, ErrorBody(e.Message, null, "replica_lost", "server_error"));
            }
            return false;
        }
    }

    /// <summary>Whether some replica serves <paramref name="size"/>; false once OpenAI's error, naming the sizes the
    /// cluster serves, has been written. (The replica list only: picking one, which asks every replica for its load,
    /// is the generation path's job.)</summary>
    private static async Task<bool> ServedAsync(HttpContext http, IGrainFactory grains, string? size)
    {
        var replicas = await grains.GetGrain<IModelRouterGrain>(0).GetReplicasAsync(http.RequestAborted);
        if (!string.IsNullOrEmpty(size) && replicas.Any(r => r.Size == size))
            return true;
        string served = string.Join(", ", replicas.Select(r => r.Size).Distinct().DefaultIfEmpty("none"));
        if (string.IsNullOrEmpty(size))
            await Error(http, 400, $"model is required: one of {served}", "model");
        else
            await Error(http, 404, $"The model '{size}' does not exist; available: {served}", "model", "model_not_found");
        return false;
    }

    /// <summary>The prompt's token ids (text is refused before tokenising when it cannot fit in <paramref name="maxTokens"/>);
    /// null when the prompt has a shape the API does not take.</summary>
    private static int[]? ReadPrompt(JsonElement? prompt, int maxTokens)
    {
        if (prompt is not { } p) return null;
        if (p.ValueKind == JsonValueKind.String) return Gpt2Tokenizer.Shared.Encode(p.GetString()!, maxTokens, "prompt");
        if (p.ValueKind != JsonValueKind.Array || p.GetArrayLength() == 0) return null;
        if (p.GetArrayLength() == 1 && p[0].ValueKind == JsonValueKind.String) return Gpt2Tokenizer.Shared.Encode(p[0].GetString()!, maxTokens, "prompt");
        if (p.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0 && id < Gpt2Tokenizer.VocabSize))
            return [.. p.EnumerateArray().Select(e => e.GetInt32())];
        return null;
    }

    /// <summary>OpenAI's logit_bias, {"token id": bias}, as ids to biases; null when a key is not a token id of this
    /// vocabulary or a value is not a number (the range of values is checked with the other settings).</summary>
    private static Dictionary<int, double>? ReadLogitBias(Dictionary<string, double>? bias)
    {
        var parsed = new Dictionary<int, double>();
        foreach (var (key, value) in bias ?? [])
        {
            if (!int.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id >= Gpt2Tokenizer.VocabSize)
                return null;
            parsed[id] = value;
        }
        return parsed;
    }

    private static string[]? ReadStops(JsonElement? stop)
    {
        if (stop is not { } s || s.ValueKind == JsonValueKind.Null) return [];
        string[] stops = s.ValueKind switch
        {
            JsonValueKind.String => [s.GetString()!],
            JsonValueKind.Array when s.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String) => [.. s.EnumerateArray().Select(e => e.GetString()!)],
            _ => [""],
        };
        return stops.Length <= 4 && stops.All(x => x.Length > 0) ? stops : null;
    }

    internal static async Task<T?> ReadAsync<T>(HttpContext http) where T : class
    {
        try
        {
            var value = await JsonSerializer.DeserializeAsync<T>(http.Request.Body, Json, http.RequestAborted);
            if (value is null) await Error(http, 400, "The request body is empty", null);
            return value;
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            long limit = http.RequestServices.GetRequiredService<Microsoft.Extensions.Options.IOptions<ApiOptions>>().Value.MaxRequestBodyBytes;
            await Error(http, 413, $"The request body is larger than this server's limit of {limit:N0} bytes (Api:MaxRequestBodyBytes)", null, "request_too_large");
            return null;
        }
        catch (JsonException e)
        {
            // The field as the caller wrote it: "settings.top_p", not the JSON path "$.settings.top_p".
            string reason = e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message;
            await Error(http, 400, $"The request body is not valid JSON for this endpoint: {reason}", e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : e.Path);
            return null;
        }
        catch (Exception e) when (e is InvalidOperationException or System.Text.DecoderFallbackException or ArgumentException)
        {
            // What System.Text.Json throws for bytes that are not UTF-8, among others.
            await Error(http, 400, $"The request body is not valid UTF-8 JSON: {e.Message}", null);
            return null;
        }
    }

    private static Task Failure(HttpContext http, Exception e) => e switch
    {
        ModelBusyException busy => Busy(http, busy),
        ArgumentException a when a.Message.StartsWith("No checkpoint", StringComparison.Ordinal) || a.Message.StartsWith("No silo serves", StringComparison.Ordinal) => Error(http, 404, a.Message, "model", "model_not_found"),
        ArgumentException a => Error(http, 400, a.Message.Split(" (Parameter ")[0], ParameterOf(a)),
        _ => throw e,
    };

    /// <summary>The request field an ArgumentException is about, as the API spells it. Limits checked inside a grain
    /// name their field in the message ("max_tokens is limited to 40"), since the parameter name of an exception
    /// that crossed from a grain is not what the caller sent.</summary>
    internal static string? ParameterOf(ArgumentException a)
    {
        if (a.Message.StartsWith("max_tokens", StringComparison.Ordinal))
            return "max_tokens";
        return ParamName(a) is { } name ? s_parameterNames.GetValueOrDefault(name, name) : null;
    }

    /// <summary>An ArgumentException's parameter name. Orleans does not carry ParamName across a grain call, but the
    /// message still ends "(Parameter 'name')", so the name is read back from there.</summary>
    internal static string? ParamName(ArgumentException a)
    {
        if (a.ParamName is { } name)
            return name;
        var named = System.Text.RegularExpressions.Regex.Match(a.Message, @"\(Parameter '(\w+)'\)");
        return named.Success ? named.Groups[1].Value : null;
    }

    /// <summary>The first string in <paramref name="value"/> (a string or an array of them) that is not valid Unicode.</summary>
    private static (string Message, string Param)? NotUnicode(JsonElement? value, string param)
    {
        if (value is not { } v)
            return null;
        string[] strings;
        try
        {
            strings = v.ValueKind == JsonValueKind.String ? [v.GetString()!]
                : v.ValueKind == JsonValueKind.Array ? [.. v.EnumerateArray().Where(e => e.ValueKind == JsonValueKind.String).Select(e => e.GetString()!)] : [];
        }
        catch (InvalidOperationException)
        {
            // A JsonElement keeps its raw bytes; bytes that are not UTF-8 fail only when read as a string.
            return ($"{param} is not valid Unicode text: bytes that are not UTF-8, or an escaped unpaired UTF-16 surrogate", param);
        }
        foreach (string s in strings)
            if (Gpt2Tokenizer.UnpairedSurrogate(s) is int at)
                return (NotUnicodeMessage(param, at), param);
        return null;
    }

    private static string NotUnicodeMessage(string param, int at) =>
        $"{param} is not valid Unicode: an unpaired UTF-16 surrogate at character {at}; send text that encodes to UTF-8";

    private static Task Busy(HttpContext http, ModelBusyException busy)
    {
        http.Response.Headers.RetryAfter = busy.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return Error(http, 429, busy.Message, null, "model_busy", "server_busy");
    }

    /// <summary>Writes OpenAI's error body: {"error": {"message", "type", "param", "code"}}.</summary>
    internal static Task Error(HttpContext http, int status, string message, string? param, string? code = null, string type = "invalid_request_error") =>
        ErrorResult(status, message, param, code, type).ExecuteAsync(http);

    /// <summary>OpenAI's error body as a result, for endpoint filters (which refuse by returning it).</summary>
    internal static IResult ErrorResult(int status, string message, string? param, string? code = null, string type = "invalid_request_error") =>
        Results.Json(ErrorBody(message, param, code, type), Json, statusCode: status);

    /// <summary>OpenAI's error body itself, also sent as an event on a stream that fails after it opened.</summary>
    private static object ErrorBody(string message, string? param, string? code, string type) => new { error = new { message, type, param, code } };

    private static void StartEventStream(HttpContext http)
    {
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
    }

    private static async Task Event<T>(HttpContext http, T payload)
    {
        await http.Response.WriteAsync("data: " + JsonSerializer.Serialize(payload, Json) + "\n\n", http.RequestAborted);
        await http.Response.Body.FlushAsync(http.RequestAborted);
    }
}

public sealed record CompletionRequest(
    string? Model, JsonElement? Prompt, int? MaxTokens, double? Temperature, double? TopP, int? TopK, long? Seed,
    JsonElement? Stop, int? N, bool? Stream, StreamOptions? StreamOptions, string? User, Dictionary<string, double>? LogitBias = null);

public sealed record StreamOptions(bool? IncludeUsage);

/// <param name="SystemFingerprint">The checkpoint version that wrote the completion (OpenAI's field for "which backend
/// configuration answered").</param>
public sealed record CompletionChunk(string Id, string Object, long Created, string Model, IReadOnlyList<Choice> Choices, Usage? Usage, string? SystemFingerprint);

public sealed record Choice(string Text, int Index, object? Logprobs, string? FinishReason);

public sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <param name="Seed">With a session only: this abstract's seed instead of the session's (to write one of its history
/// again); without a session the seed is settings.seed.</param>
public sealed record AbstractsRequest(string? Category, string? Title, string? Model, AbstractSettings? Settings, bool? Stream, string? Session, long? Seed = null);

public sealed record AbstractSettings(double? TopP, int? TopK, double? Temperature, int? MaxTokens, long? Seed);
