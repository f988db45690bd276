using System.Net;
using Microsoft.Extensions.Options;
using Orleans.Dashboard;
using OrleansGpt.Grains;
using OrleansGpt.Grains.Interfaces;
using static OrleansGpt.Silo.Api.OpenAiApi;

namespace OrleansGpt.Silo.Api;

/// <summary>Who may call the operator endpoints (appsettings section "Operator").</summary>
public sealed class OperatorOptions
{
    /// <summary>The key operators send as "Authorization: Bearer KEY". Empty: the operator endpoints answer only
    /// while the silo listens on loopback addresses alone; bound to any other address they refuse every call.</summary>
    public string ApiKey { get; set; } = "";

    /// <summary>Serve the Orleans Dashboard at /dashboard: only to callers on this machine (an ssh tunnel, kubectl
    /// port-forward) or ones sending the operator key. False: not served, and its statistics not collected.</summary>
    public bool Dashboard { get; set; } = true;
}

/// <summary>
/// What operators call: the cluster's state, checkpoint versions (list, promote, rollback, reload from the checkpoint
/// directory) and fine-tunes (start, status, history, cancel, resume). Every endpoint here requires the operator key
/// (<see cref="OperatorOptions"/>). Errors use OpenAI's error body, like the rest of the API.
/// </summary>
public static class OperatorApi
{
    public static IEndpointRouteBuilder MapOperatorApi(this IEndpointRouteBuilder app)
    {
        var ops = app.MapGroup("/v1").AddEndpointFilter(RequireOperatorKey).RequireJsonBodies();

        // Brings CheckpointDirectory/SIZE (on this silo) into the store as a version and promotes it everywhere.
        ops.MapPost("/models/{size}/reload", async (string size, HttpContext http, IGrainFactory grains, ModelHost host) =>
        {
            if (!CheckpointFolder.Sizes(host.CheckpointDirectory).Contains(size))
            {
                await Error(http, 404, $"No checkpoint for '{size}' in {host.CheckpointDirectory} to reload", "size", "model_not_found");
                return;
            }
            await Guarded(http, async () =>
            {
                var manifest = await Task.Run(() => host.Import(size), http.RequestAborted);
                var registry = grains.GetGrain<ICheckpointRegistryGrain>(size);
                await registry.RegisterAsync(CheckpointRegistryGrain.From(manifest), cancellationToken: http.RequestAborted);
                await WritePromotion(http, await registry.PromoteAsync(manifest.Version, http.RequestAborted));
            });
        });
        ops.MapGet("/models/{size}/versions", async (string size, HttpContext http, IGrainFactory grains) =>
        {
            var versions = await grains.GetGrain<ICheckpointRegistryGrain>(size).GetVersionsAsync(http.RequestAborted);
            await http.Response.WriteAsJsonAsync(new { model = size, data = versions }, Json);
        });
        // POST /v1/models/{size}/promote {"version": "..."}: both phases on every replica; 409 naming the replica that
        // could not load it, in which case nothing changed.
        ops.MapPost("/models/{size}/promote", async (string size, HttpContext http, IGrainFactory grains) =>
        {
            var body = await ReadAsync<PromoteBody>(http);
            if (body is null) return;
            if (string.IsNullOrEmpty(body.Version)) { await Error(http, 400, "version is required: one of GET /v1/models/{size}/versions", "version"); return; }
            await Guarded(http, async () => await WritePromotion(http, await grains.GetGrain<ICheckpointRegistryGrain>(size).PromoteAsync(body.Version, http.RequestAborted)));
        });
        ops.MapPost("/models/{size}/rollback", (string size, HttpContext http, IGrainFactory grains) =>
            Guarded(http, async () => await WritePromotion(http, await grains.GetGrain<ICheckpointRegistryGrain>(size).RollbackAsync(http.RequestAborted))));
        ops.MapGet("/cluster", async (HttpContext http, IGrainFactory grains) => await http.Response.WriteAsJsonAsync(await ClusterStatus.ReadAsync(grains, http.RequestAborted), Json));

        // POST /v1/fine-tunes {model, data_directory, epochs, max_steps, learning_rate, block_size, batch_size,
        // gradient_accumulation, weight_decay, seed, checkpoint_every, promote}: 202 with the run's status; 409 while
        // the size is already training or no silo may train.
        ops.MapPost("/fine-tunes", async (HttpContext http, IGrainFactory grains) =>
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
                CheckpointEvery = body.CheckpointEvery ?? defaults.CheckpointEvery,
                Promote = body.Promote ?? defaults.Promote,
            };
            await Guarded(http, async () => await WriteStatus(http, await grains.GetGrain<ITrainingGrain>(body.Model).StartAsync(request, http.RequestAborted), StatusCodes.Status202Accepted));
        });
        ops.MapGet("/fine-tunes/{size}", (string size, HttpContext http, IGrainFactory grains) =>
            Guarded(http, async () => await WriteStatus(http, await grains.GetGrain<ITrainingGrain>(size).GetStatusAsync(http.RequestAborted))));
        ops.MapGet("/fine-tunes/{size}/history", (string size, HttpContext http, IGrainFactory grains) =>
            Guarded(http, async () => await http.Response.WriteAsJsonAsync(new
            {
                model = size,
                data = (await grains.GetGrain<ITrainingGrain>(size).GetHistoryAsync(http.RequestAborted)).Select(StatusBody),
            }, Json)));
        ops.MapPost("/fine-tunes/{size}/cancel", (string size, HttpContext http, IGrainFactory grains) =>
            Guarded(http, async () => await WriteStatus(http, await grains.GetGrain<ITrainingGrain>(size).CancelAsync(http.RequestAborted))));
        ops.MapPost("/fine-tunes/{size}/resume", (string size, HttpContext http, IGrainFactory grains) =>
            Guarded(http, async () => await WriteStatus(http, await grains.GetGrain<ITrainingGrain>(size).ResumeAsync(http.RequestAborted), StatusCodes.Status202Accepted)));
        return app;
    }

    /// <summary>
    /// Maps the Orleans Dashboard at <paramref name="path"/> when Operator:Dashboard is on, behind
    /// <see cref="CheckDashboard"/>. The dashboard is a browser page, which cannot send a bearer key by itself, so the
    /// rule is the caller's address: on this machine, or through something that adds the key (a reverse proxy).
    /// </summary>
    public static WebApplication MapOperatorDashboard(this WebApplication app, string path)
    {
        var options = app.Services.GetRequiredService<IOptions<OperatorOptions>>().Value;
        if (!options.Dashboard)
            return app;
        app.UseWhen(http => http.Request.Path.StartsWithSegments(path), branch => branch.Use(async (http, next) =>
        {
            if (CheckDashboard(options.ApiKey, http.Connection.RemoteIpAddress, http.Request.Headers.Authorization.FirstOrDefault()) is { } refusal)
            {
                await ErrorResult(refusal.Status, refusal.Message, null, refusal.Code).ExecuteAsync(http);
                return;
            }
            await next(http);
        }));
        app.MapOrleansDashboard(path);
        return app;
    }

    /// <summary>
    /// Whether a dashboard request may proceed: null when the caller is on this machine (loopback) or sends the operator
    /// key; else 403. A reverse proxy on the same machine makes every caller look local: route the dashboard away there
    /// or set Operator:Dashboard to false.
    /// </summary>
    public static (int Status, string Message, string Code)? CheckDashboard(string configuredKey, IPAddress? caller, string? authorization)
    {
        if (caller is not null && IPAddress.IsLoopback(caller.IsIPv4MappedToIPv6 ? caller.MapToIPv4() : caller))
            return null;
        if (configuredKey.Length > 0 && Check(configuredKey, [], authorization) is null)
            return null;
        return (403, "The Orleans Dashboard answers callers on the silo's own machine only: reach it through ssh -L or kubectl port-forward" +
            (configuredKey.Length > 0 ? ", or send Authorization: Bearer <Operator:ApiKey>" : ""), "dashboard_local_only");
    }

    /// <summary>Lets operator calls through, or answers with <see cref="Check"/>'s refusal.</summary>
    private static async ValueTask<object?> RequireOperatorKey(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var addresses = http.RequestServices.GetService<Microsoft.AspNetCore.Hosting.Server.IServer>()?.Features
            .Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()?.Addresses ?? [];
        var refusal = Check(http.RequestServices.GetRequiredService<IOptions<OperatorOptions>>().Value.ApiKey, addresses,
            http.Request.Headers.Authorization.FirstOrDefault());
        if (refusal is null)
            return await next(context);
        if (refusal.Value.Status == 401)
            http.Response.Headers.WWWAuthenticate = "Bearer";
        return ErrorResult(refusal.Value.Status, refusal.Value.Message, null, refusal.Value.Code);
    }

    /// <summary>
    /// Whether an operator call may proceed: null when it may, else the refusal. With a key configured, the call must
    /// send "Authorization: Bearer KEY" (401 otherwise; compared in constant time). With none, calls are served only
    /// while every address the silo listens on is loopback (a developer's machine), and refused with 403 saying to
    /// set Operator:ApiKey otherwise.
    /// </summary>
    public static (int Status, string Message, string Code)? Check(string configuredKey, IEnumerable<string> listenAddresses, string? authorization)
    {
        if (configuredKey.Length == 0)
            return listenAddresses.All(IsLoopback) ? null
                : (403, "Operator endpoints are closed: this silo listens beyond loopback and Operator:ApiKey is not set", "operator_key_not_configured");
        string? sent = authorization is { } header && header.StartsWith("Bearer ", StringComparison.Ordinal) ? header[7..] : null;
        return sent is not null && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
                System.Text.Encoding.UTF8.GetBytes(sent), System.Text.Encoding.UTF8.GetBytes(configuredKey))
            ? null
            : (401, "Operator endpoints need the operator key: Authorization: Bearer <Operator:ApiKey>", "invalid_api_key");
    }

    private static bool IsLoopback(string address)
    {
        var uri = new Uri(address.Replace("://+", "://0.0.0.0", StringComparison.Ordinal).Replace("://*", "://0.0.0.0", StringComparison.Ordinal));
        return uri.Host == "localhost" || (IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip));
    }

    /// <summary>Runs an operator call, turning its errors into OpenAI-style error bodies: 400 for bad input, 409 for a
    /// state that does not allow it (a run going, a promotion a replica refused, nothing to roll back to).</summary>
    private static async Task Guarded(HttpContext http, Func<Task> call)
    {
        try
        {
            await call();
        }
        catch (ArgumentException e)
        {
            string? name = ParamName(e);
            await Error(http, 400, e.Message.Split(" (Parameter ")[0], name is null ? null : System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(name));
        }
        catch (InvalidOperationException e)
        {
            await Error(http, 409, e.Message, null, "conflict");
        }
        catch (InvalidDataException e)
        {
            await Error(http, 409, e.Message, null, "checkpoint_damaged");
        }
    }

    private static Task WritePromotion(HttpContext http, Promotion p) =>
        http.Response.WriteAsJsonAsync(new { model = p.Size, version = p.Version, previous = p.Previous, replicas = p.Replicas, load_seconds = p.LoadSeconds }, Json);

    private static Task WriteStatus(HttpContext http, TrainingStatus s, int status = StatusCodes.Status200OK)
    {
        http.Response.StatusCode = status;
        return http.Response.WriteAsJsonAsync(StatusBody(s), Json);
    }

    private static object StatusBody(TrainingStatus s) => new
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
        s.Version,
        s.Node,
    };

    private sealed record PromoteBody(string? Version);

    private sealed record FineTuneBody(
        string? Model, string? DataDirectory, int? Epochs, long? MaxSteps, double? LearningRate, int? BlockSize, int? BatchSize,
        int? GradientAccumulation, double? WeightDecay, long? Seed, int? CheckpointEvery, bool? Promote);
}
