using OrleansGpt.Training.Model;

namespace OrleansGpt.Grains;

/// <summary>
/// The layout of a silo's checkpoint directory: ROOT/SIZE is what a size serves (a checkpoint, or a training run
/// directory holding one in checkpoint/); fine-tuning runs live in ROOT/.runs/ and replaced checkpoints move to
/// ROOT/.previous/, so nothing an operator put there is ever deleted.
/// </summary>
public static class CheckpointStore
{
    private const string RunsFolder = ".runs";
    private const string PreviousFolder = ".previous";

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

    /// <summary>The directory a size serves from.</summary>
    public static string SizeDirectory(string root, string size) => Path.Combine(root, size);

    /// <summary>A new, unused run directory for fine-tuning <paramref name="size"/>.</summary>
    public static string NewRunDirectory(string root, string size) => Path.Combine(root, RunsFolder, Stamped(size));

    /// <summary>
    /// Copies the model files of the checkpoint <paramref name="source"/> resolves to (config, weights, provenance;
    /// no optimizer state) into <paramref name="destination"/>, atomically.
    /// </summary>
    public static void CopyModel(string source, string destination)
    {
        string from = Gpt2Checkpoint.Resolve(source);
        Training.IO.AtomicWrite.Directory(destination, staging =>
        {
            foreach (var name in new[] { Gpt2Checkpoint.ConfigFile, Gpt2Checkpoint.WeightsFile, Gpt2Checkpoint.ProvenanceFile })
                if (File.Exists(Path.Combine(from, name)))
                    File.Copy(Path.Combine(from, name), Path.Combine(staging, name));
        });
    }

    /// <summary>
    /// Makes <paramref name="checkpoint"/> the checkpoint <paramref name="size"/> serves: its model files are staged
    /// beside ROOT/SIZE, the current ROOT/SIZE moves to ROOT/.previous/, and the staged copy takes its place. A crash
    /// between the two renames leaves both versions on disk (in .previous/ and the .staging- directory). Returns
    /// where the previous checkpoint went, or null when there was none.
    /// </summary>
    public static string? Publish(string root, string size, string checkpoint)
    {
        string target = Path.GetFullPath(SizeDirectory(root, size));
        string staging = Path.Combine(root, $".staging-{size}-{Guid.NewGuid():N}");
        CopyModel(checkpoint, staging);
        string? previous = null;
        if (Directory.Exists(target))
        {
            previous = Path.Combine(root, PreviousFolder, Stamped(size));
            Directory.CreateDirectory(Path.GetDirectoryName(previous)!);
            Directory.Move(target, previous);
        }
        Directory.Move(staging, target);
        return previous;
    }

    /// <summary>"size-20261126-213623-5ac1b2": sorts by time, and two made in the same second still differ.</summary>
    private static string Stamped(string size) => $"{size}-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..6]}";
}
