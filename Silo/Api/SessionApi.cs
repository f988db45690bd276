using OrleansGpt.Grains;
using OrleansGpt.Grains.Interfaces;
using static OrleansGpt.Silo.Api.OpenAiApi;

namespace OrleansGpt.Silo.Api;

/// <summary>
/// A user's session over HTTP, so web pages and scripts can read and keep it: GET /v1/sessions/{id} (settings and the
/// history with each abstract's seed and version) and PATCH /v1/sessions/{id} (any of category, model, top_p, top_k,
/// temperature, max_tokens, seed; validated as the session grain does, nothing changed on an error).
/// </summary>
public static class SessionApi
{
    /// <summary>The longest session id accepted: ids are grain keys, kept in storage and sent with every call.</summary>
    public const int MaxIdLength = 128;

    public static IEndpointRouteBuilder MapSessionApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/sessions/{id}", async (string id, HttpContext http, IGrainFactory grains) =>
        {
            if (!await ValidIdAsync(http, id)) return;
            var session = grains.GetGrain<ISessionGrain>(id);
            await WriteAsync(http, id, await session.GetSettingsAsync(http.RequestAborted), await session.GetHistoryAsync(http.RequestAborted));
        });
        app.MapPatch("/v1/sessions/{id}", async (string id, HttpContext http, IGrainFactory grains) =>
        {
            if (!await ValidIdAsync(http, id)) return;
            var patch = await ReadAsync<SessionPatch>(http);
            if (patch is null) return;
            var session = grains.GetGrain<ISessionGrain>(id);
            var current = await session.GetSettingsAsync(http.RequestAborted);
            var s = current.Sampling;
            var wanted = new SessionSettings(patch.Category ?? current.Category, patch.Model ?? current.ModelSize, s with
            {
                TopP = patch.TopP ?? s.TopP,
                TopK = patch.TopK ?? s.TopK,
                Temperature = patch.Temperature ?? s.Temperature,
                MaxTokens = patch.MaxTokens ?? s.MaxTokens,
                Seed = patch.SeedSent ? patch.Seed : s.Seed, // "seed": null goes back to a new random seed for every abstract
            });
            SessionSettings updated;
            try
            {
                // Checked here first, where the error still knows which setting it is about; the grain then checks
                // what only the cluster knows (a size some silo serves, that replica's max_tokens limit).
                SessionGrain.Validate(wanted);
                updated = await session.UpdateSettingsAsync(wanted, http.RequestAborted);
            }
            catch (ArgumentException e)
            {
                await Error(http, 400, e.Message.Split(" (Parameter ")[0], SettingName(e));
                return;
            }
            await WriteAsync(http, id, updated, await session.GetHistoryAsync(http.RequestAborted));
        }).RequireJsonBodies();
        return app;
    }

    private static async Task<bool> ValidIdAsync(HttpContext http, string id)
    {
        if (id.Length is > 0 and <= MaxIdLength && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '@'))
            return true;
        await Error(http, 400, $"A session id is 1 to {MaxIdLength} characters of letters, digits, '-', '_', '.' and '@'", "id");
        return false;
    }

    /// <summary>Which field of the patch an error is about, as the API spells it: the completions API's names for
    /// sampling settings and limits; the session grain reports a size it cannot serve under "settings".</summary>
    private static string? SettingName(ArgumentException e) => ParameterOf(e) switch
    {
        { } name when name != "settings" => name,
        _ when e.Message.Contains("model", StringComparison.OrdinalIgnoreCase) || e.Message.Contains("size", StringComparison.OrdinalIgnoreCase) => "model",
        _ when e.Message.Contains("categor", StringComparison.OrdinalIgnoreCase) => "category",
        _ => null,
    };

    private static Task WriteAsync(HttpContext http, string id, SessionSettings settings, IReadOnlyList<HistoryEntry> history) =>
        http.Response.WriteAsJsonAsync(new
        {
            id,
            settings = new
            {
                category = settings.Category,
                model = settings.ModelSize,
                top_p = settings.Sampling.TopP,
                top_k = settings.Sampling.TopK,
                temperature = settings.Sampling.Temperature,
                max_tokens = settings.Sampling.MaxTokens,
                seed = settings.Sampling.Seed,
            },
            history = history.Select(h => new { category = h.Category, title = h.Title, @abstract = h.Abstract, seed = h.Seed, version = h.Version, at = h.At }),
            history_limit = SessionGrain.HistoryLimit,
        }, Json);

    private sealed record SessionPatch(string? Category, string? Model, double? TopP, int? TopK, double? Temperature, int? MaxTokens)
    {
        private readonly long? _seed;

        /// <summary>The seed, null both when absent and when sent as null; <see cref="SeedSent"/> tells them apart (the
        /// serializer sets a property only when the body names it).</summary>
        public long? Seed
        {
            get => _seed;
            init
            {
                _seed = value;
                SeedSent = true;
            }
        }

        [System.Text.Json.Serialization.JsonIgnore]
        public bool SeedSent { get; private init; }
    }
}
