// The versioned checkpoint store every silo reads (a shared directory by configuration):
//   STORE/SIZE/VERSION/      config.json, model.safetensors, provenance.json, manifest.json
//   STORE/.staging/          versions being written; a rename makes one visible, so a writer killed half-way
//                            leaves only staging debris that no reader looks at
// VERSION is the content hash of config.json and model.safetensors, so the same weights published twice are one
// version, and a silo can check a copy against it before loading.
using System.Security.Cryptography;
using System.Text.Json;
using OrleansGpt.Training.IO;

namespace OrleansGpt.Training.Model;

/// <summary>One file of a stored checkpoint, with its length and SHA-256.</summary>
public sealed record CheckpointFile(string Name, long Length, string Sha256);

/// <summary>
/// What a stored checkpoint version is and how it was made: the version id, the version it was fine-tuned from, the
/// data and settings of that run, tokens seen, eval perplexity, and the files with their hashes.
/// </summary>
/// <param name="Version">The first 16 hex digits of SHA-256 over the config's and the weights' hashes.</param>
/// <param name="Parent">The version this one was fine-tuned from; null for a checkpoint brought in from outside.</param>
/// <param name="Kind">untrained, trained-from-scratch, fine-tuned or unknown (from provenance.json).</param>
public sealed record CheckpointManifest(
    string Size,
    string Version,
    DateTimeOffset Created,
    string? Parent,
    string Kind,
    string Description,
    long TokensSeen,
    string? Data,
    string? Settings,
    double? EvalPerplexity,
    IReadOnlyList<CheckpointFile> Files);

/// <summary>Where a version came from, beyond what its provenance.json says.</summary>
public sealed record CheckpointOrigin(string? Parent = null, string? Data = null, string? Settings = null, double? EvalPerplexity = null);

/// <summary>
/// Publishes checkpoints as immutable, content-addressed versions and copies them into a silo's local cache,
/// checking every file's hash on the way. Safe for several processes on one shared directory: versions appear by
/// rename and never change afterwards.
/// </summary>
public sealed class CheckpointStore(string root)
{
    public const string ManifestFile = "manifest.json";
    private const string StagingFolder = ".staging";
    private static readonly string[] s_modelFiles = [Gpt2Checkpoint.ConfigFile, Gpt2Checkpoint.WeightsFile, Gpt2Checkpoint.ProvenanceFile];
    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public string Root { get; } = Path.GetFullPath(root);

    /// <summary>Sizes with at least one complete version, sorted.</summary>
    public IReadOnlyList<string> Sizes() => !Directory.Exists(Root) ? [] :
        [.. Directory.EnumerateDirectories(Root).Select(Path.GetFileName).OfType<string>()
            .Where(size => !size.StartsWith('.') && VersionDirectories(size).Any()).Order(StringComparer.Ordinal)];

    /// <summary>Every complete version of <paramref name="size"/>, oldest first.</summary>
    public IReadOnlyList<CheckpointManifest> Versions(string size) =>
        [.. VersionDirectories(size).Select(d => ReadManifest(d)).OrderBy(m => m.Created)];

    /// <summary>The version directories of a size. A directory without a manifest (which a rename never produces) is
    /// not a version.</summary>
    private IEnumerable<string> VersionDirectories(string size)
    {
        string directory = Path.Combine(Root, size);
        return Directory.Exists(directory)
            ? Directory.EnumerateDirectories(directory).Where(d => File.Exists(Path.Combine(d, ManifestFile)))
            : [];
    }

    /// <summary>The manifest of one version; ArgumentException naming the versions there are when it is not in the store.</summary>
    public CheckpointManifest Manifest(string size, string version)
    {
        string directory = VersionDirectory(size, version);
        if (!File.Exists(Path.Combine(directory, ManifestFile)))
            throw new ArgumentException($"No version '{version}' of '{size}' in the checkpoint store {Root}; it has: " +
                string.Join(", ", Versions(size).Select(v => v.Version).DefaultIfEmpty("none")));
        return ReadManifest(directory);
    }

    /// <summary>Where a version lives in the store.</summary>
    public string VersionDirectory(string size, string version)
    {
        if (version.Length == 0 || version.Any(c => !char.IsAsciiHexDigitLower(c)))
            throw new ArgumentException($"'{version}' is not a checkpoint version (16 lower-case hex digits)", nameof(version));
        if (size.Length == 0 || size.StartsWith('.') || size.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_')))
            throw new ArgumentException($"'{size}' is not a model size name", nameof(size));
        return Path.Combine(Root, size, version);
    }

    /// <summary>
    /// Copies the model files of <paramref name="checkpoint"/> (a checkpoint or training run directory) into the store
    /// as a version of <paramref name="size"/>, hashing as it copies. The version becomes visible in one rename once
    /// complete; publishing the same weights again returns the existing version unchanged.
    /// </summary>
    public CheckpointManifest Publish(string size, string checkpoint, CheckpointOrigin? origin = null)
    {
        string from = Gpt2Checkpoint.Resolve(checkpoint);
        if (!Gpt2Checkpoint.Exists(from))
            throw new ArgumentException($"{checkpoint} holds no checkpoint (config.json and model.safetensors)");
        _ = VersionDirectory(size, "0");
        origin ??= new CheckpointOrigin();
        string staging = Path.Combine(Root, StagingFolder, $"{size}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            var files = s_modelFiles.Where(name => File.Exists(Path.Combine(from, name)))
                .Select(name => CopyHashing(Path.Combine(from, name), Path.Combine(staging, name)))
                .ToList();
            string version = VersionOf(files);
            var provenance = Gpt2Checkpoint.ReadProvenance(from);
            var manifest = new CheckpointManifest(size, version, DateTimeOffset.UtcNow, origin.Parent, provenance.Kind, provenance.Description,
                provenance.TrainedTokens, origin.Data, origin.Settings, origin.EvalPerplexity, files);
            AtomicWrite.Text(Path.Combine(staging, ManifestFile), JsonSerializer.Serialize(manifest, s_json));
            string target = VersionDirectory(size, version);
            if (Directory.Exists(target))
                return ReadManifest(target);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            try
            {
                Directory.Move(staging, target);
            }
            catch (IOException) when (Directory.Exists(target))
            {
                // Another silo published the same weights at the same moment: its copy is this version.
            }
            return ReadManifest(target);
        }
        finally
        {
            if (Directory.Exists(staging))
                Directory.Delete(staging, recursive: true);
        }
    }

    /// <summary>
    /// Deletes a version's files (ModelHost:Retention). It disappears in one rename first, so no reader ever sees it
    /// half-deleted; a version already gone is no error.
    /// </summary>
    public void Remove(string size, string version)
    {
        string directory = VersionDirectory(size, version);
        if (!Directory.Exists(directory))
            return;
        string doomed = Path.Combine(Root, StagingFolder, $"removed-{size}-{version}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path.GetDirectoryName(doomed)!);
        try
        {
            Directory.Move(directory, doomed);
        }
        catch (DirectoryNotFoundException)
        {
            return; // another silo removed it first
        }
        Directory.Delete(doomed, recursive: true);
    }

    /// <summary>
    /// A local copy of a version under <paramref name="cacheRoot"/>, every file's length and SHA-256 checked against
    /// the manifest (an existing copy is checked again, so a damaged cache is replaced). Throws
    /// <see cref="InvalidDataException"/> naming the file when the store's copy does not match: that version is
    /// refused, and whatever is serving keeps serving.
    /// </summary>
    public string Fetch(CheckpointManifest manifest, string cacheRoot)
    {
        string cached = Path.Combine(Path.GetFullPath(cacheRoot), manifest.Size, manifest.Version);
        if (Directory.Exists(cached) && Mismatch(cached, manifest) is null)
            return cached;
        string source = VersionDirectory(manifest.Size, manifest.Version);
        AtomicWrite.Directory(cached, staging =>
        {
            foreach (var file in manifest.Files)
            {
                string from = Path.Combine(source, file.Name);
                if (!File.Exists(from))
                    throw new InvalidDataException($"Checkpoint {manifest.Size}/{manifest.Version} is damaged: {file.Name} is missing from {source}");
                var copied = CopyHashing(from, Path.Combine(staging, file.Name));
                if (copied != file)
                    throw new InvalidDataException($"Checkpoint {manifest.Size}/{manifest.Version} is damaged: {file.Name} in {source} has " +
                        $"{copied.Length} bytes, sha256 {copied.Sha256[..16]}..., but its manifest says {file.Length} bytes, sha256 {file.Sha256[..16]}...");
            }
            File.Copy(Path.Combine(source, ManifestFile), Path.Combine(staging, ManifestFile));
        });
        return cached;
    }

    /// <summary>The first file of <paramref name="directory"/> that does not match the manifest, or null when all do.</summary>
    public static string? Mismatch(string directory, CheckpointManifest manifest)
    {
        foreach (var file in manifest.Files)
        {
            string path = Path.Combine(directory, file.Name);
            if (!File.Exists(path) || new FileInfo(path).Length != file.Length || Hash(path) != file.Sha256)
                return file.Name;
        }
        return null;
    }

    private static CheckpointManifest ReadManifest(string directory) =>
        JsonSerializer.Deserialize<CheckpointManifest>(File.ReadAllText(Path.Combine(directory, ManifestFile)), s_json)
            ?? throw new InvalidDataException($"{directory}/{ManifestFile} is empty");

    /// <summary>The version id: only config and weights count, so a reworded provenance is not a new model.</summary>
    private static string VersionOf(IEnumerable<CheckpointFile> files)
    {
        string identity = string.Join("\n", files.Where(f => f.Name is Gpt2Checkpoint.ConfigFile or Gpt2Checkpoint.WeightsFile)
            .OrderBy(f => f.Name, StringComparer.Ordinal).Select(f => $"{f.Name} {f.Sha256}"));
        return Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(identity)))[..16];
    }

    private static CheckpointFile CopyHashing(string from, string to)
    {
        using var source = new FileStream(from, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        using var target = new FileStream(to, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        long length = 0;
        for (int n; (n = source.Read(buffer)) > 0; length += n)
        {
            sha.AppendData(buffer, 0, n);
            target.Write(buffer, 0, n);
        }
        target.Flush(flushToDisk: true);
        return new CheckpointFile(Path.GetFileName(to), length, Convert.ToHexStringLower(sha.GetHashAndReset()));
    }

    private static string Hash(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
