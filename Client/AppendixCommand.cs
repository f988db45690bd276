using System.Globalization;
using System.Text;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Client;

/// <summary>
/// The batch job behind the paper's appendix: one abstract for every title in a TSV file (columns category and
/// title, with that header), written to a Markdown file in the input's order. Exactly one sample per title and
/// no cherry-picking: title i (1-based) is sampled once with seed base + i, so the file can be regenerated
/// exactly, and nothing is drawn twice. A busy replica is waited for (the same seed is sent again); any other
/// error stops the job, naming the line, and leaves no output file.
/// </summary>
public static class AppendixCommand
{
    public static async Task<int> RunAsync(IClusterClient cluster, string titlesPath, string outputPath, string model, SamplingOptions sampling, long seed, int concurrency, TextWriter log)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        var titles = ReadTitles(titlesPath);
        var replicas = (await cluster.GetGrain<IModelRouterGrain>(0).GetReplicasAsync()).Where(r => r.Size == model).ToList();
        if (replicas.Count == 0)
            throw new ArgumentException($"No silo serves the '{model}' model");
        var info = await cluster.GetGrain<IModelGrain>(replicas[0].Key).GetInfoAsync();

        var abstracts = new (string Text, string? Finish, string Version)[titles.Count];
        int next = -1, done = 0;
        await Task.WhenAll(Enumerable.Range(0, Math.Min(concurrency, titles.Count)).Select(async _ =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < titles.Count)
            {
                var (line, category, title) = titles[i];
                var request = new AbstractRequest(category, title, model, sampling with { Seed = seed + i + 1 });
                abstracts[i] = await WriteOnceAsync(cluster, request, line, titlesPath);
                log.WriteLine($"[{Interlocked.Increment(ref done)}/{titles.Count}] {title}");
            }
        }));

        var text = new StringBuilder();
        text.AppendLine("# Generated abstracts").AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Model: {model} ({info.Parameters:N0} parameters; {info.Provenance}).");
        text.AppendLine(CultureInfo.InvariantCulture, $"Nucleus sampling: top-p {sampling.TopP}, top-k {sampling.TopK}, temperature {sampling.Temperature}, at most {sampling.MaxTokens} tokens.");
        text.AppendLine(CultureInfo.InvariantCulture, $"One sample per title, the only one drawn (title i used seed {seed} + i): nothing was picked or discarded.");
        int ended = abstracts.Count(a => a.Finish == "stop");
        text.Append(CultureInfo.InvariantCulture, $"{ended} of {titles.Count} ended by themselves (<|endoftext|>)")
            .AppendLine(ended == titles.Count ? "." : "; the others were cut at the token limit.").AppendLine();
        for (int i = 0; i < titles.Count; i++)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"## [{titles[i].Category}] {titles[i].Title}").AppendLine();
            text.AppendLine(abstracts[i].Text.Trim()).AppendLine();
            string ending = abstracts[i].Finish == "stop" ? "ended by itself" : $"cut at the {sampling.MaxTokens}-token limit";
            text.AppendLine(CultureInfo.InvariantCulture, $"*seed {seed + i + 1}, {ending}*").AppendLine();
        }
        // The same samples as JSONL beside it, one per line with how each ended and which version wrote it: what
        // `Training -- quality --samples` reads.
        var jsonl = new StringBuilder();
        for (int i = 0; i < titles.Count; i++)
            jsonl.AppendLine(System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["source"] = $"{model} {abstracts[i].Version}", ["category"] = titles[i].Category, ["title"] = titles[i].Title,
                ["text"] = abstracts[i].Text.Trim(), ["finish_reason"] = abstracts[i].Finish, ["seed"] = seed + i + 1,
            }));
        string full = Path.GetFullPath(outputPath);
        await WriteWholeAsync(full, text.ToString());
        await WriteWholeAsync(Path.ChangeExtension(full, ".jsonl"), jsonl.ToString());
        log.WriteLine($"wrote {titles.Count} abstracts to {full} (and {Path.ChangeExtension(full, ".jsonl")})");
        return 0;
    }

    /// <summary>Written whole or not at all: a temporary file beside the output, then a rename.</summary>
    private static async Task WriteWholeAsync(string path, string content)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        string temporary = $"{path}.tmp-{Guid.NewGuid():N}";
        await File.WriteAllTextAsync(temporary, content);
        File.Move(temporary, path, overwrite: true);
    }

    private static async Task<(string Text, string? Finish, string Version)> WriteOnceAsync(IGrainFactory grains, AbstractRequest request, int line, string path)
    {
        while (true)
        {
            try
            {
                var text = new StringBuilder();
                string? finish = null;
                string version = "";
                await foreach (var chunk in grains.WriteAbstractAsync(request))
                {
                    text.Append(chunk.Text);
                    finish = chunk.FinishReason ?? finish;
                    version = chunk.Version;
                }
                return (text.ToString(), finish, version);
            }
            catch (ModelBusyException busy)
            {
                // Not a second sample: the request was refused before anything was drawn, and is sent again as is.
                await Task.Delay(TimeSpan.FromSeconds(Math.Max(1, busy.RetryAfterSeconds)));
            }
            catch (GenerationInterruptedException)
            {
                // The replica's silo died mid-abstract. Sending the same seeded request again draws the same sample,
                // not a new one, so this is no cherry-picking.
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"{path}:{line}: {e.Message.Split(" (Parameter ")[0]}", e);
            }
        }
    }

    /// <summary>Reads "category TAB title" rows after a "category TAB title" header; blank lines are skipped.</summary>
    public static List<(int Line, string Category, string Title)> ReadTitles(string path)
    {
        var lines = File.ReadAllLines(path);
        if (lines.Length == 0 || lines[0].Trim() != "category\ttitle")
            throw new ArgumentException($"{path}:1: expected the header 'category<TAB>title'");
        var titles = new List<(int, string, string)>();
        for (int i = 1; i < lines.Length; i++)
        {
            if (lines[i].Trim().Length == 0)
                continue;
            var fields = lines[i].Split('\t');
            if (fields.Length != 2 || fields[0].Trim().Length == 0 || fields[1].Trim().Length == 0)
                throw new ArgumentException($"{path}:{i + 1}: expected a category and a title separated by one tab");
            titles.Add((i + 1, fields[0].Trim(), fields[1].Trim()));
        }
        if (titles.Count == 0)
            throw new ArgumentException($"{path}: no titles");
        return titles;
    }
}
