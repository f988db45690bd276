using OrleansGpt.Grains.Interfaces;
using static OrleansGpt.Silo.Api.OpenAiApi;

namespace OrleansGpt.Silo.Api;

/// <summary>
/// The human evaluation over HTTP (what /evaluate uses): POST /v1/evaluations/pairs {evaluator, model} gives the next
/// pair to judge; POST /v1/evaluations {evaluator, pair_id, picked, fluency_a, relevance_a, fluency_b, relevance_b}
/// records a judgement (201); GET /v1/evaluations gives the results: how often people told the real abstract from the
/// generated one (50% = indistinguishable) with a 95% interval, per category and per model version, and the mean
/// ratings of real and generated abstracts.
/// </summary>
public static class EvaluationApi
{
    private const string Study = "default";

    public static IEndpointRouteBuilder MapEvaluationApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/evaluations/pairs", async (HttpContext http, IGrainFactory grains) =>
        {
            var body = await ReadAsync<PairBody>(http);
            if (body is null) return;
            if (string.IsNullOrEmpty(body.Evaluator)) { await Error(http, 400, "evaluator is required: an id the page keeps per browser", "evaluator"); return; }
            if (string.IsNullOrEmpty(body.Model)) { await Error(http, 400, "model is required: a served size, as GET /v1/models lists", "model"); return; }
            await Guarded(http, async () =>
            {
                var pair = await grains.GetGrain<IEvaluationGrain>(Study).NextPairAsync(body.Evaluator, body.Model, http.RequestAborted);
                await http.Response.WriteAsJsonAsync(new { pair_id = pair.PairId, pair.Category, pair.Title, a = pair.A, b = pair.B, judged = pair.Judged, model = body.Model }, Json);
            });
        }).RequireJsonBodies();
        app.MapPost("/v1/evaluations", async (HttpContext http, IGrainFactory grains) =>
        {
            var body = await ReadAsync<JudgementBody>(http);
            if (body is null) return;
            await Guarded(http, async () =>
            {
                var record = await grains.GetGrain<IEvaluationGrain>(Study).JudgeAsync(new Judgement(body.Evaluator ?? "", body.PairId ?? "", body.Picked ?? "",
                    body.FluencyA ?? 0, body.RelevanceA ?? 0, body.FluencyB ?? 0, body.RelevanceB ?? 0), http.RequestAborted);
                http.Response.StatusCode = StatusCodes.Status201Created;
                await http.Response.WriteAsJsonAsync(new { pair_id = record.PairId, correct = record.Correct, record.Category, record.Model, record.Version }, Json);
            });
        }).RequireJsonBodies();
        app.MapGet("/v1/evaluations", async (HttpContext http, IGrainFactory grains) =>
            await http.Response.WriteAsJsonAsync(EvaluationResults.From(await grains.GetGrain<IEvaluationGrain>(Study).GetJudgementsAsync(http.RequestAborted)), Json));
        return app;
    }

    private static async Task Guarded(HttpContext http, Func<Task> call)
    {
        try
        {
            await call();
        }
        catch (ArgumentException e) when (e.Message.StartsWith("No silo serves", StringComparison.Ordinal) || e.Message.StartsWith("No checkpoint", StringComparison.Ordinal))
        {
            await Error(http, 404, e.Message.Split(" (Parameter ")[0], "model", "model_not_found");
        }
        catch (ArgumentException e)
        {
            await Error(http, 400, e.Message.Split(" (Parameter ")[0], ParamName(e));
        }
        catch (InvalidOperationException e)
        {
            await Error(http, 409, e.Message, null, "evaluation_unavailable");
        }
    }

    private sealed record PairBody(string? Evaluator, string? Model);

    private sealed record JudgementBody(string? Evaluator, string? PairId, string? Picked, int? FluencyA, int? RelevanceA, int? FluencyB, int? RelevanceB);
}

/// <summary>The study's results from its judgements.</summary>
public static class EvaluationResults
{
    /// <summary>Overall, per category and per model version: judgements, how often the real abstract was found, with
    /// Wilson's 95% interval (sound for small counts and for rates near 0 or 1), and mean ratings.</summary>
    public static object From(IReadOnlyList<JudgementRecord> judgements) => new
    {
        judgements = judgements.Count,
        evaluators = judgements.Select(j => j.Evaluator).Distinct().Count(),
        overall = Summary(judgements),
        by_category = judgements.GroupBy(j => j.Category).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => new { category = g.Key, results = Summary([.. g]) }),
        by_version = judgements.GroupBy(j => (j.Model, j.Version)).OrderBy(g => g.Key.Model, StringComparer.Ordinal)
            .Select(g => new { model = g.Key.Model, version = g.Key.Version, results = Summary([.. g]) }),
    };

    private static object Summary(IReadOnlyList<JudgementRecord> j)
    {
        int correct = j.Count(x => x.Correct);
        var (low, high) = Wilson(correct, j.Count);
        return new
        {
            n = j.Count,
            found_real = correct,
            found_real_rate = j.Count == 0 ? (double?)null : (double)correct / j.Count,
            interval_95 = j.Count == 0 ? null : new[] { low, high },
            real = new { fluency = Mean(j, x => x.RealFluency), relevance = Mean(j, x => x.RealRelevance) },
            generated = new { fluency = Mean(j, x => x.GeneratedFluency), relevance = Mean(j, x => x.GeneratedRelevance) },
        };
    }

    /// <summary>Wilson's score interval for <paramref name="successes"/> of <paramref name="n"/> at 95%.</summary>
    public static (double Low, double High) Wilson(int successes, int n)
    {
        if (n == 0)
            return (0, 1);
        const double z = 1.959963984540054;
        double p = (double)successes / n, z2 = z * z;
        double center = (p + z2 / (2 * n)) / (1 + z2 / n);
        double half = z * Math.Sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / (1 + z2 / n);
        return (Math.Max(0, center - half), Math.Min(1, center + half));
    }

    private static double? Mean(IReadOnlyList<JudgementRecord> j, Func<JudgementRecord, int> rating) => j.Count == 0 ? null : j.Average(rating);
}
