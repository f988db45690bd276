using OrleansGpt.Grains.Interfaces;
using static OrleansGpt.Silo.Api.OpenAiApi;

namespace OrleansGpt.Silo.Api;

/// <summary>
/// What operators call: reload a size's checkpoint into every replica, and fine-tune a size through its training
/// grain (which publishes the result and reloads the replicas when the run ends). Errors use OpenAI's error body,
/// like the rest of the API.
/// </summary>
public static class OperatorApi
{
    public static IEndpointRouteBuilder MapOperatorApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/models/{size}/reload", async (string size, HttpContext http, IGrainFactory grains) =>
        {
            // Every replica of the size, on every silo, loads the checkpoint again.
            var replicas = (await grains.GetGrain<IModelRouterGrain>(0).GetReplicasAsync(http.RequestAborted)).Where(r => r.Size == size).ToList();
            if (replicas.Count == 0)
            {
                await Error(http, 404, $"No silo serves '{size}'", "size", "model_not_found");
                return;
            }
            var infos = await Task.WhenAll(replicas.Select(r => grains.GetGrain<IModelGrain>(r.Key).ReloadAsync(http.RequestAborted).AsTask()));
            await http.Response.WriteAsJsonAsync(new { id = size, replicas = infos.Select(i => new { i.Key, i.Checkpoint, i.Provenance, i.Parameters }) }, Json);
        });

        // POST /v1/fine-tunes {model, data_directory, epochs, max_steps, learning_rate, block_size, batch_size,
        // gradient_accumulation, weight_decay, seed}: 202 with the run's status; 409 while the size is already training.
        app.MapPost("/v1/fine-tunes", async (HttpContext http, IGrainFactory grains) =>
        {
            var body = await ReadAsync<FineTuneBody>(http);
            if (body is null) return;
            if (string.IsNullOrEmpty(body.Model)) { await Error(http, 400, "model is required: the served size to fine-tune", "model"); return; }
            if (string.IsNullOrEmpty(body.DataDirectory)) { await Error(http, 400, "data_directory is required: a directory written by the Training project's prepare command", "data_directory"); return; }
            var defaults = new FineTuneRequest(body.DataDirectory);
            var request = defaults with
            {
                Epochs = body.Epochs ?? defaults.Epochs,
                MaxSteps = body.MaxSteps,
                LearningRate = body.LearningRate ?? defaults.LearningRate,
                BlockSize = body.BlockSize ?? defaults.BlockSize,
                BatchSize = body.BatchSize ?? defaults.BatchSize,
                GradientAccumulation = body.GradientAccumulation ?? defaults.GradientAccumulation,
                WeightDecay = body.WeightDecay ?? defaults.WeightDecay,
                Seed = body.Seed ?? defaults.Seed,
            };
            await Run(http, () => grains.GetGrain<ITrainingGrain>(body.Model).StartAsync(request, http.RequestAborted), StatusCodes.Status202Accepted);
        });
        app.MapGet("/v1/fine-tunes/{size}", (string size, HttpContext http, IGrainFactory grains) =>
            Run(http, () => grains.GetGrain<ITrainingGrain>(size).GetStatusAsync(http.RequestAborted)));
        app.MapPost("/v1/fine-tunes/{size}/cancel", (string size, HttpContext http, IGrainFactory grains) =>
            Run(http, () => grains.GetGrain<ITrainingGrain>(size).CancelAsync(http.RequestAborted)));
        return app;
    }

    private static async Task Run(HttpContext http, Func<ValueTask<TrainingStatus>> call, int status = StatusCodes.Status200OK)
    {
        try
        {
            var s = await call();
            http.Response.StatusCode = status;
            await http.Response.WriteAsJsonAsync(new
            {
                model = s.Size,
                state = s.State.ToString().ToLowerInvariant(),
                s.Step,
                s.TotalSteps,
                s.TrainLoss,
                s.EvalLoss,
                s.Perplexity,
                s.RunDirectory,
                s.Message,
                s.Reloaded,
            }, Json);
        }
        catch (ArgumentException e)
        {
            await Error(http, 400, e.Message.Split(" (Parameter ")[0], e.ParamName is { } name ? System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(name) : null);
        }
        catch (InvalidOperationException e)
        {
            await Error(http, 409, e.Message, "model", "fine_tune_running");
        }
    }

    private sealed record FineTuneBody(
        string? Model, string? DataDirectory, int? Epochs, long? MaxSteps, double? LearningRate, int? BlockSize, int? BatchSize,
        int? GradientAccumulation, double? WeightDecay, long? Seed);
}
