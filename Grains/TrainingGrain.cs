using System.Text.Json;
using Microsoft.Extensions.Logging;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Grains.Placement;
using OrleansGpt.Hosting;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Loop;
using OrleansGpt.Training.Model;

namespace OrleansGpt.Grains;

/// <summary>What a training grain persists: the current or last run (with what is needed to resume it) and the
/// history of finished ones.</summary>
[GenerateSerializer]
public sealed class FineTuneState
{
    [Id(0)] public TrainingStatus? Current { get; set; }
    [Id(1)] public FineTuneRequest? Request { get; set; }
    [Id(2)] public List<TrainingStatus> History { get; set; } = [];
}

/// <summary>
/// Coordinates fine-tuning of one served size (the grain key); see <see cref="ITrainingGrain"/>. Placed on a silo
/// with a training device; runs the <see cref="Trainer"/> on a dedicated thread there, then publishes the result into
/// the checkpoint store, registers it and promotes it through the size's <see cref="ICheckpointRegistryGrain"/>. The
/// activation is kept alive while a run is going; a silo shutting down cancels the run (its checkpoint is saved), and
/// a silo that dies leaves a persisted "running" status that the next activation reports as interrupted.
/// </summary>
[TrainingPlacement]
public sealed partial class TrainingGrain(
    [PersistentState("fine-tunes", GrainStorage.Training)] IPersistentState<FineTuneState> state,
    ModelHost host,
    ILogger<TrainingGrain> logger) : Grain, ITrainingGrain
{
    private const int HistoryLimit = 50;
    private static readonly JsonSerializerOptions s_json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    private TrainingStatus? _status;
    private CancellationTokenSource? _cancel;
    private Task? _run;

    private string Size => this.GetPrimaryKeyString();

    private TrainingStatus Status => Volatile.Read(ref _status) ?? state.State.Current
        ?? new TrainingStatus(Size, TrainingState.Idle, 0, 0, null, null, null, "no fine-tuning run yet", []);

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // A run persisted as running has no thread here: its silo stopped without finishing it.
        if (state.State.Current is { State: TrainingState.Running } lost)
        {
            long saved = SavedStep(lost.RunDirectory);
            _status = lost with
            {
                State = TrainingState.Interrupted,
                Message = $"interrupted: the silo running it ({lost.Node}) stopped near step {lost.Step}; " +
                    (saved > 0 ? $"its last checkpoint is at step {saved}" : "it had saved no checkpoint yet") +
                    $". POST /v1/fine-tunes/{Size}/resume continues it",
            };
        }
        return Task.CompletedTask;
    }

    public ValueTask<TrainingStatus> GetStatusAsync(CancellationToken cancellationToken = default) => ValueTask.FromResult(Status);

    public ValueTask<IReadOnlyList<TrainingStatus>> GetHistoryAsync(CancellationToken cancellationToken = default) =>
        ValueTask.FromResult<IReadOnlyList<TrainingStatus>>([.. state.State.History]);

    public async ValueTask<TrainingStatus> StartAsync(FineTuneRequest request, CancellationToken cancellationToken = default)
    {
        if (_run is { IsCompleted: false })
            throw new InvalidOperationException($"'{Size}' is already fine-tuning (step {Status.Step} of {Status.TotalSteps}); cancel that run first");
        string baseVersion = await GrainFactory.GetGrain<ICheckpointRegistryGrain>(Size).GetActiveAsync(cancellationToken)
            ?? (await CheckpointRegistryGrain.ImportAsync(GrainFactory, host, Size, cancellationToken)).Active;
        // Resolved once, here, against ModelHost:DataDirectory; the run (and a resume on another silo) uses the full path.
        request = request with { DataDirectory = host.ResolveDataDirectory(request.DataDirectory) };
        foreach (var split in new[] { "train", "eval" })
            if (!File.Exists(TokenSplit.TokensPath(request.DataDirectory, split)) || !File.Exists(TokenSplit.ExamplesPath(request.DataDirectory, split)))
                throw new ArgumentException($"'{request.DataDirectory}' holds no prepared {split} split: run the Training project's prepare command first", nameof(request.DataDirectory));
        string run = CheckpointFolder.NewRunDirectory(host.Store, Size);
        var train = Options(request, run, resume: false);
        await BeginAsync(request, train, new TrainingStatus(Size, TrainingState.Running, 0, 0, null, null, run, "starting", [], baseVersion, TrainingNode()));
        return Status;
    }

    public async ValueTask<TrainingStatus> ResumeAsync(CancellationToken cancellationToken = default)
    {
        if (Status is not { State: TrainingState.Interrupted, RunDirectory: { } run } interrupted || state.State.Request is not { } request)
            throw new InvalidOperationException($"'{Size}' has no interrupted run to resume (state: {Status.State.ToString().ToLowerInvariant()})");
        var train = Options(request, run, resume: SavedStep(run) > 0);
        state.State.History.Add(interrupted);
        await BeginAsync(request, train, interrupted with { State = TrainingState.Running, Node = TrainingNode(), Message = $"resuming from step {SavedStep(run)}" });
        return Status;
    }

    public ValueTask<TrainingStatus> CancelAsync(CancellationToken cancellationToken = default)
    {
        if (_run is { IsCompleted: false })
            _cancel!.Cancel();
        return ValueTask.FromResult(Status);
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        if (_run is { IsCompleted: false } run)
        {
            _cancel!.Cancel();
            await run.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.ContinueOnCapturedContext | ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private TrainOptions Options(FineTuneRequest request, string run, bool resume) => new TrainOptions
    {
        DataDirectory = request.DataDirectory,
        OutputDirectory = run,
        Init = Path.Combine(run, "base"),
        Epochs = request.Epochs,
        MaxSteps = request.MaxSteps,
        LearningRate = request.LearningRate,
        BlockSize = request.BlockSize,
        BatchSize = request.BatchSize,
        GradientAccumulation = request.GradientAccumulation,
        WeightDecay = request.WeightDecay,
        Seed = request.Seed,
        EvalEvery = request.CheckpointEvery,
        LogEvery = 1,
        Resume = resume,
    }.Validate();

    /// <summary>Persists the run as running (so a dead silo is noticed), then starts it.</summary>
    private async Task BeginAsync(FineTuneRequest request, TrainOptions train, TrainingStatus status)
    {
        state.State.Request = request;
        state.State.Current = status;
        await state.WriteStateAsync();
        Publish(status);
        _cancel = new CancellationTokenSource();
        DelayDeactivation(Timeout.InfiniteTimeSpan);
        _run = RunAsync(request, train, status.Version!, _cancel.Token);
    }

    /// <summary>Trains off the grain's turn, then (back on it) publishes, registers and promotes. Never throws: the
    /// outcome is the status, persisted and added to the history.</summary>
    private async Task RunAsync(FineTuneRequest request, TrainOptions train, string baseVersion, CancellationToken cancellation)
    {
        string run = train.OutputDirectory;
        try
        {
            var result = await Task.Factory.StartNew(() =>
            {
                // The starting weights are copied into the run (checked against their hashes), so the run stays
                // reproducible whatever the store does later.
                if (!train.Resume)
                    CopyVersion(baseVersion, train.Init);
                using var log = new StreamWriter(Path.Combine(run, "train.log"), append: true) { AutoFlush = true };
                return new Trainer(train, log)
                {
                    Progress = (point, total) => Publish(Status with
                    {
                        Step = point.Step,
                        TotalSteps = total,
                        TrainLoss = point.TrainLoss ?? Status.TrainLoss,
                        EvalLoss = point.EvalLoss ?? Status.EvalLoss,
                        Message = "training",
                    }),
                }.Run(cancellation);
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

            // A cancel that arrived during the last step or the final evaluation (which the trainer does not stop for)
            // still means "do not publish".
            if (result.Interrupted || cancellation.IsCancellationRequested)
            {
                await FinishAsync(Status with { State = TrainingState.Cancelled, Step = result.Steps, Message = $"cancelled at step {result.Steps}; its checkpoint is in {result.CheckpointDirectory}, not published" });
                return;
            }
            var origin = new CheckpointOrigin(baseVersion, Path.GetFullPath(request.DataDirectory),
                $"fine-tune: {result.Steps} steps, lr {request.LearningRate}, block {request.BlockSize}, batch {request.BatchSize} x {request.GradientAccumulation}, " +
                $"weight decay {request.WeightDecay}, seed {request.Seed}",
                result.EvalLoss is { } loss ? Math.Exp(loss) : null);
            var manifest = await Task.Run(() => host.Store.Publish(Size, result.CheckpointDirectory, origin));
            var registry = GrainFactory.GetGrain<ICheckpointRegistryGrain>(Size);
            await registry.RegisterAsync(CheckpointRegistryGrain.From(manifest));
            var done = Status with { Step = result.Steps, EvalLoss = result.EvalLoss, Version = manifest.Version };
            if (!request.Promote)
            {
                await FinishAsync(done with { State = TrainingState.Succeeded, Message = $"published as version {manifest.Version} (not promoted)" });
                return;
            }
            try
            {
                var promotion = await registry.PromoteAsync(manifest.Version);
                await FinishAsync(done with
                {
                    State = TrainingState.Succeeded,
                    Reloaded = promotion.Replicas,
                    Message = $"published as version {manifest.Version} and promoted over {promotion.Previous ?? "none"} on {promotion.Replicas.Count} replica(s)",
                });
            }
            catch (Exception e) when (e is InvalidOperationException or ArgumentException)
            {
                await FinishAsync(done with { State = TrainingState.Failed, Message = $"published as version {manifest.Version}, but promoting it failed: {e.Message}" });
            }
        }
        catch (Exception e)
        {
            RunFailed(e, Size, run);
            await FinishAsync(Status with { State = TrainingState.Failed, Message = e.Message });
        }
        finally
        {
            DelayDeactivation(TimeSpan.Zero);
        }
    }

    private async Task FinishAsync(TrainingStatus status)
    {
        Publish(status);
        state.State.Current = status;
        state.State.History.Add(status);
        if (state.State.History.Count > HistoryLimit)
            state.State.History.RemoveRange(0, state.State.History.Count - HistoryLimit);
        await state.WriteStateAsync();
        await Task.Run(() => CheckpointFolder.PruneRuns(host.Store, Size, host.Retention.Runs));
    }

    private void CopyVersion(string version, string destination)
    {
        string cached = host.Store.Fetch(host.Store.Manifest(Size, version), host.CacheDirectory);
        Training.IO.AtomicWrite.Directory(destination, staging =>
        {
            foreach (var name in new[] { Gpt2Checkpoint.ConfigFile, Gpt2Checkpoint.WeightsFile, Gpt2Checkpoint.ProvenanceFile })
                if (File.Exists(Path.Combine(cached, name)))
                    File.Copy(Path.Combine(cached, name), Path.Combine(staging, name));
        });
    }

    /// <summary>"node/cpu:0": where this silo trains (its first training device).</summary>
    private string TrainingNode() => $"{host.Inventory.Node}/{host.Inventory.TrainingDevices.FirstOrDefault() ?? "none"}";

    /// <summary>The step of the run's last saved checkpoint; 0 when it has none.</summary>
    private static long SavedStep(string? run)
    {
        string path = Path.Combine(run ?? "", "checkpoint", Trainer.StateFile);
        return run is not null && File.Exists(path) ? JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), s_json)?.Step ?? 0 : 0;
    }

    private void Publish(TrainingStatus status) => Volatile.Write(ref _status, status);

    [LoggerMessage(1, LogLevel.Error, "Fine-tuning {Size} in {Run} failed")]
    private partial void RunFailed(Exception e, string size, string run);
}
