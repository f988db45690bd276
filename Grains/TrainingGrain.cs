using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Loop;

namespace OrleansGpt.Grains;

/// <summary>
/// Coordinates fine-tuning of one served size (the grain key): runs the <see cref="Trainer"/> on a dedicated
/// thread of this silo, then publishes the result into the checkpoint directory and has every replica of the size
/// reload it. The activation is kept alive while a run is going, and a silo shutting down cancels the run (whose
/// checkpoint is saved in its run directory).
/// </summary>
public sealed partial class TrainingGrain(IOptions<ModelHostOptions> options, ILogger<TrainingGrain> logger) : Grain, ITrainingGrain
{
    private TrainingStatus? _status;
    private CancellationTokenSource? _cancel;
    private Task? _run;

    private string Size => this.GetPrimaryKeyString();

    private string Root => options.Value.CheckpointDirectory;

    private TrainingStatus Status => Volatile.Read(ref _status) ?? new TrainingStatus(Size, TrainingState.Idle, 0, 0, null, null, null, "no fine-tuning run yet", []);

    public ValueTask<TrainingStatus> GetStatusAsync(CancellationToken cancellationToken = default) => ValueTask.FromResult(Status);

    public ValueTask<TrainingStatus> StartAsync(FineTuneRequest request, CancellationToken cancellationToken = default)
    {
        if (_run is { IsCompleted: false })
            throw new InvalidOperationException($"'{Size}' is already fine-tuning (step {Status.Step} of {Status.TotalSteps}); cancel that run first");
        if (!CheckpointStore.Sizes(Root).Contains(Size))
            throw new ArgumentException($"No checkpoint for '{Size}' in {Path.GetFullPath(Root)} to fine-tune");
        foreach (var split in new[] { "train", "eval" })
            if (!File.Exists(TokenSplit.TokensPath(request.DataDirectory, split)) || !File.Exists(TokenSplit.ExamplesPath(request.DataDirectory, split)))
                throw new ArgumentException($"'{request.DataDirectory}' holds no prepared {split} split: run the Training project's prepare command first", nameof(request.DataDirectory));

        string run = CheckpointStore.NewRunDirectory(Root, Size);
        var train = new TrainOptions
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
            LogEvery = 1,
        }.Validate();

        _cancel = new CancellationTokenSource();
        Publish(new TrainingStatus(Size, TrainingState.Running, 0, 0, null, null, run, "starting", []));
        DelayDeactivation(Timeout.InfiniteTimeSpan);
        _run = RunAsync(train, _cancel.Token);
        return ValueTask.FromResult(Status);
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

    /// <summary>Trains off the grain's turn, then (back on it) publishes and reloads. Never throws: the outcome is
    /// the status.</summary>
    private async Task RunAsync(TrainOptions train, CancellationToken cancellation)
    {
        string run = train.OutputDirectory;
        try
        {
            var result = await Task.Factory.StartNew(() =>
            {
                // The starting weights are copied into the run, so its provenance names a checkpoint that stays put.
                CheckpointStore.CopyModel(CheckpointStore.SizeDirectory(Root, Size), train.Init);
                using var log = new StreamWriter(Path.Combine(run, "train.log")) { AutoFlush = true };
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

            if (result.Interrupted)
            {
                Publish(Status with { State = TrainingState.Cancelled, Step = result.Steps, Message = $"cancelled at step {result.Steps}; its checkpoint is in {result.CheckpointDirectory}, not published" });
                return;
            }
            string? previous = await Task.Run(() => CheckpointStore.Publish(Root, Size, result.CheckpointDirectory));
            var replicas = (await GrainFactory.GetGrain<IModelRouterGrain>(0).GetReplicasAsync()).Where(r => r.Size == Size).ToList();
            var reloaded = new List<string>();
            var failures = new List<string>();
            foreach (var replica in replicas)
            {
                try
                {
                    reloaded.Add((await GrainFactory.GetGrain<IModelGrain>(replica.Key).ReloadAsync()).Key);
                }
                catch (Exception e)
                {
                    failures.Add($"{replica.Key}: {e.Message}");
                }
            }
            Publish(Status with
            {
                State = failures.Count == 0 ? TrainingState.Succeeded : TrainingState.Failed,
                Step = result.Steps,
                EvalLoss = result.EvalLoss,
                Reloaded = reloaded,
                Message = $"published to {CheckpointStore.SizeDirectory(Root, Size)} (previous checkpoint: {previous ?? "none"}); " +
                    (failures.Count == 0 ? $"{reloaded.Count} replica(s) reloaded" : $"reload failed on {string.Join("; ", failures)}"),
            });
        }
        catch (Exception e)
        {
            RunFailed(e, Size, run);
            Publish(Status with { State = TrainingState.Failed, Message = e.Message });
        }
        finally
        {
            DelayDeactivation(TimeSpan.Zero);
        }
    }

    private void Publish(TrainingStatus status) => Volatile.Write(ref _status, status);

    [LoggerMessage(1, LogLevel.Error, "Fine-tuning {Size} in {Run} failed")]
    private partial void RunFailed(Exception e, string size, string run);
}
