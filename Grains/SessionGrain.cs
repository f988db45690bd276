using System.Runtime.CompilerServices;
using System.Text;
using OrleansGpt.Grains.Interfaces;
using OrleansGpt.Hosting;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Grains;

/// <summary>What a session persists: its settings and the most recent abstracts.</summary>
[GenerateSerializer]
public sealed class SessionState
{
    [Id(0)] public SessionSettings? Settings { get; set; }
    [Id(1)] public List<HistoryEntry> History { get; set; } = [];
}

/// <summary>One user's settings and history; writes abstracts through the model grain for the user's size. Placed at
/// random, so sessions spread over every silo rather than piling up next to the gateway their clients use; their
/// state is in grain storage, so a session whose silo dies is activated on another with nothing lost.</summary>
[Orleans.Placement.RandomPlacement]
public sealed class SessionGrain(
    [PersistentState("session", GrainStorage.Sessions)] IPersistentState<SessionState> state,
    IGrainFactory grains) : Grain, ISessionGrain
{
    /// <summary>Abstracts kept per session; older ones are dropped.</summary>
    public const int HistoryLimit = 20;

    private SessionSettings Settings => state.State.Settings ?? SessionSettings.Default;

    public ValueTask<SessionSettings> GetSettingsAsync(CancellationToken cancellationToken = default) => ValueTask.FromResult(Settings);

    public async ValueTask<SessionSettings> UpdateSettingsAsync(SessionSettings settings, CancellationToken cancellationToken = default)
    {
        var valid = Validate(settings);
        // The cluster's limits are checked for what changes, so a new session can change its category even where
        // the silo's max_tokens limit is below the default; generation reports a limit broken later.
        if (valid.ModelSize != Settings.ModelSize || valid.Sampling.MaxTokens != Settings.Sampling.MaxTokens)
        {
            var router = grains.GetGrain<IModelRouterGrain>(0);
            string key = await router.PickReplicaAsync(valid.ModelSize, cancellationToken: cancellationToken)
                ?? throw new ArgumentOutOfRangeException(nameof(settings), valid.ModelSize, $"No silo serves the '{valid.ModelSize}' model; served: " +
                    string.Join(", ", (await router.GetReplicasAsync(cancellationToken)).Select(r => r.Size).Distinct().DefaultIfEmpty("none")));
            var info = await grains.GetGrain<IModelGrain>(key).GetInfoAsync(cancellationToken);
            if (valid.Sampling.MaxTokens > info.MaxNewTokens)
                throw new ArgumentOutOfRangeException(nameof(settings), valid.Sampling.MaxTokens, $"max_tokens is limited to {info.MaxNewTokens} for '{valid.ModelSize}'");
        }
        state.State.Settings = valid;
        await state.WriteStateAsync(cancellationToken);
        return valid;
    }

    public ValueTask<IReadOnlyList<HistoryEntry>> GetHistoryAsync(CancellationToken cancellationToken = default) =>
        ValueTask.FromResult<IReadOnlyList<HistoryEntry>>([.. state.State.History]);

    public async IAsyncEnumerable<GeneratedChunk> WriteAbstractAsync(string title, long? seed = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var settings = Settings;
        // A session records the seed of every abstract, so any of them can be reproduced.
        // Random seeds stay below 2^53 so that every client, JavaScript's numbers included, carries them exactly.
        long used = seed ?? settings.Sampling.Seed ?? Random.Shared.NextInt64(0, 1L << 53);
        var request = new AbstractRequest(settings.Category, title, settings.ModelSize, settings.Sampling with { Seed = used });
        var text = new StringBuilder();
        string version = "";
        await foreach (var chunk in grains.WriteAbstractAsync(request, cancellationToken))
        {
            text.Append(chunk.Text);
            version = chunk.Version;
            yield return chunk;
        }
        state.State.History.Add(new HistoryEntry(settings.Category, PaperFormat.NormalizeWhitespace(title), text.ToString().Trim(), used, DateTimeOffset.UtcNow, version));
        if (state.State.History.Count > HistoryLimit)
            state.State.History.RemoveRange(0, state.State.History.Count - HistoryLimit);
        await state.WriteStateAsync(CancellationToken.None);
    }

    /// <summary>Checks every setting, naming the first bad one; returns the settings with the category normalised.</summary>
    public static SessionSettings Validate(SessionSettings settings)
    {
        var category = PaperFormat.ParseCategory(settings.Category);
        if (!GptConfig.PresetNames.Contains(settings.ModelSize))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.ModelSize, $"Unknown model size; expected one of {string.Join(", ", GptConfig.PresetNames)}");
        ModelGrain.ToSettings(settings.Sampling);
        return settings with { Category = category.ToString() };
    }
}
