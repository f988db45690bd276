using OrleansGpt.Training.Model;

namespace OrleansGpt.Grains;

/// <summary>
/// An operator's checkpoint directory (ModelHost:CheckpointDirectory): ROOT/SIZE holds a checkpoint, or a training
/// run directory with one in checkpoint/, for each size. A silo brings these into the versioned
/// <see cref="CheckpointStore"/> at start; folders starting with '.' (the store, caches, fine-tuning runs) are not sizes.
/// </summary>
public static class CheckpointFolder
{
    /// <summary>Sizes with a checkpoint (or training run) under <paramref name="root"/>, one sub-directory each,
    /// sorted by name.</summary>
    public static IReadOnlyList<string> Sizes(string root)
    {
        if (!Directory.Exists(root))
            return [];
        return [.. Directory.EnumerateDirectories(root)
            .Where(d => !Path.GetFileName(d).StartsWith('.') && Gpt2Checkpoint.Exists(Gpt2Checkpoint.Resolve(d)))
            .Select(d => Path.GetFileName(d)!)
            .Order(StringComparer.Ordinal)];
    }

    /// <summary>The directory a size is brought in from.</summary>
    public static string SizeDirectory(string root, string size) => Path.Combine(root, size);

    /// <summary>A new, unused fine-tuning run directory for <paramref name="size"/> in the store's .runs/ folder, which
    /// every training silo can reach (a run resumes wherever its grain is activated next).</summary>
    public static string NewRunDirectory(CheckpointStore store, string size) =>
        Path.Combine(store.Root, ".runs", $"{size}-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..6]}");

    /// <summary>
    /// Deletes all but the newest <paramref name="keep"/> finished run directories of <paramref name="size"/>
    /// (ModelHost:Retention:Runs). Called by the size's training grain when a run ends, so no run of the size is
    /// going; it never deletes the newest run. Published weights live on in the store: a run holds only its logs,
    /// metrics and optimizer state.
    /// </summary>
    public static void PruneRuns(CheckpointStore store, string size, int keep)
    {
        string runs = Path.Combine(store.Root, ".runs");
        if (!Directory.Exists(runs))
            return;
        // Names are SIZE-yyyyMMdd-HHmmss-xxxxxx: ordinal order is age order.
        foreach (var old in Directory.EnumerateDirectories(runs, size + "-*")
                     .Where(d => System.Text.RegularExpressions.Regex.IsMatch(Path.GetFileName(d)[(size.Length + 1)..], @"^\d{8}-\d{6}-[0-9a-f]{6}$"))
                     .OrderDescending(StringComparer.Ordinal).Skip(Math.Max(1, keep)))
            Directory.Delete(old, recursive: true);
    }
}
