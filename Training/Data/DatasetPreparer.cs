using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using OrleansGpt.Training.IO;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Training.Data;

/// <summary>Which of a paper's categories decides its class.</summary>
public enum CategoryRule
{
    /// <summary>The archive's primary_cat column (the paper's definition).</summary>
    Primary,

    /// <summary>The first entry of the categories column.</summary>
    FirstListed,
}

/// <summary>Settings of one prepare run.</summary>
public sealed record PrepareOptions
{
    public required IReadOnlyList<string> Inputs { get; init; }
    public required string OutputDirectory { get; init; }
    public IReadOnlyList<ArxivCategory> Categories { get; init; } = Enum.GetValues<ArxivCategory>();
    public CategoryRule Rule { get; init; } = CategoryRule.Primary;

    /// <summary>Share of papers in the eval split (the paper: 10%).</summary>
    public double EvalFraction { get; init; } = 0.1;

    /// <summary>Salt of the split hash: the same seed puts each arXiv id in the same split on every run.</summary>
    public long Seed { get; init; } = 42;
}

/// <summary>Per-category counts, the paper's Table 1.</summary>
public sealed record CategoryCount(string Category, long Papers, double Percent, long Tokens);

/// <summary>One split, the paper's Table 2.</summary>
public sealed record SplitCount(string Split, long Papers, long Tokens, IReadOnlyDictionary<string, long> PapersByCategory, IReadOnlyDictionary<string, long> TokensByCategory);

/// <summary>What prepare read, kept, skipped and wrote (stats.json).</summary>
public sealed record PrepareStats(
    IReadOnlyList<string> Inputs, string CategoryRule, double EvalFraction, long Seed,
    long RowsRead, long OtherCategory, long DuplicateId, long EmptyTitle, long EmptyAbstract, long MissingId,
    IReadOnlyList<CategoryCount> Categories, IReadOnlyList<SplitCount> Splits);

/// <summary>
/// Turns arXiv Archive TSV files into train and eval token files for fine-tuning: filter by category, drop
/// repeated ids and empty rows (counting each), split by a hash of the arXiv id, encode each paper as
/// <c>&lt;|CAT|&gt; Title &lt;|sep|&gt; Abstract &lt;|endoftext|&gt;</c>.
/// </summary>
public static partial class DatasetPreparer
{
    public const string StatsJson = "stats.json";
    public const string StatsMarkdown = "stats.md";
    public static readonly string[] Splits = ["train", "eval"];
    private static readonly JsonSerializerOptions s_json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Runs the whole preparation and writes the output directory atomically.</summary>
    public static PrepareStats Run(PrepareOptions options, TextWriter? log = null)
    {
        if (options.Inputs.Count == 0)
            throw new ArgumentException("Give at least one --input file");
        if (options.EvalFraction is < 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.EvalFraction, "--eval-fraction must be in [0, 1)");
        foreach (var input in options.Inputs)
            if (!File.Exists(input))
                throw new FileNotFoundException($"Input file {input} does not exist", input);

        var wanted = options.Categories.ToDictionary(PaperFormat.ArxivName, c => c, StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var kept = new List<(ArxivCategory Category, string Title, string Abstract, bool Eval)>();
        long rows = 0, other = 0, duplicate = 0, emptyTitle = 0, emptyAbstract = 0, missingId = 0;
        foreach (var input in options.Inputs)
        {
            using var reader = new ArxivTsvReader(input);
            foreach (var paper in reader.ReadAll())
            {
                rows++;
                string category = options.Rule == CategoryRule.Primary ? paper.PrimaryCategory : paper.Categories.FirstOrDefault() ?? "";
                if (!wanted.TryGetValue(category, out var cat)) { other++; continue; }
                string id = VersionSuffix().Replace(paper.ArxivId, "");
                if (id.Length == 0) { missingId++; continue; }
                if (!seen.Add(id)) { duplicate++; continue; }
                string title = PaperFormat.NormalizeWhitespace(paper.Title);
                string abstractText = PaperFormat.NormalizeWhitespace(paper.Abstract);
                if (title.Length == 0) { emptyTitle++; continue; }
                if (abstractText.Length == 0) { emptyAbstract++; continue; }
                kept.Add((cat, title, abstractText, IsEval(id, options.Seed, options.EvalFraction)));
            }
            log?.WriteLine($"read {input}: {rows:N0} rows so far, {kept.Count:N0} papers kept");
        }

        // BPE is the slow part (~20M tokens for the 2025 file); papers are independent, so use every core.
        var tokenizer = Gpt2Tokenizer.Shared;
        var encoded = new int[kept.Count][];
        Parallel.For(0, kept.Count, i => encoded[i] = PaperFormat.EncodeExample(tokenizer, kept[i].Category, kept[i].Title, kept[i].Abstract));

        var categories = options.Categories.Select(c => new CategoryCount(
            Tag(c),
            kept.Count(k => k.Category == c),
            kept.Count == 0 ? 0 : Math.Round(100.0 * kept.Count(k => k.Category == c) / kept.Count, 2),
            Enumerable.Range(0, kept.Count).Where(i => kept[i].Category == c).Sum(i => (long)encoded[i].Length))).ToList();
        var splits = Splits.Select(split =>
        {
            var members = Enumerable.Range(0, kept.Count).Where(i => kept[i].Eval == (split == "eval")).ToList();
            return new SplitCount(split, members.Count, members.Sum(i => (long)encoded[i].Length),
                options.Categories.ToDictionary(Tag, c => (long)members.Count(i => kept[i].Category == c)),
                options.Categories.ToDictionary(Tag, c => members.Where(i => kept[i].Category == c).Sum(i => (long)encoded[i].Length)));
        }).ToList();
        var stats = new PrepareStats(options.Inputs.Select(Path.GetFileName).ToList()!, options.Rule.ToString(), options.EvalFraction, options.Seed,
            rows, other, duplicate, emptyTitle, emptyAbstract, missingId, categories, splits);

        AtomicWrite.Directory(options.OutputDirectory, staging =>
        {
            foreach (var split in Splits)
            {
                var examples = Enumerable.Range(0, kept.Count).Where(i => kept[i].Eval == (split == "eval")).Select(i => (kept[i].Category, encoded[i])).ToList();
                TokenSplit.Write(staging, split, examples);
            }
            File.WriteAllText(Path.Combine(staging, StatsJson), JsonSerializer.Serialize(stats, s_json));
            File.WriteAllText(Path.Combine(staging, StatsMarkdown), ToMarkdown(stats));
        });
        return stats;
    }

    /// <summary>
    /// The split of an arXiv id: a SHA-256 of "seed:id" read as a fraction in [0, 1). Depends on nothing but the
    /// id and the seed, so a paper stays in its split however the input files change.
    /// </summary>
    public static bool IsEval(string arxivId, long seed, double evalFraction)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes($"{seed}:{arxivId}"), hash);
        ulong top = BitConverter.ToUInt64(hash);
        return (top >> 11) * (1.0 / (1UL << 53)) < evalFraction;
    }

    /// <summary>The paper's Tables 1 and 2, plus what was skipped, as markdown.</summary>
    public static string ToMarkdown(PrepareStats stats)
    {
        var md = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine(inv, $"# Prepared data");
        md.AppendLine();
        md.AppendLine(inv, $"Inputs: {string.Join(", ", stats.Inputs)}. Category rule: {stats.CategoryRule}. Eval fraction {stats.EvalFraction}, split seed {stats.Seed}.");
        md.AppendLine();
        md.AppendLine("## Papers per category (Table 1)");
        md.AppendLine();
        md.AppendLine("| category | papers | % | BPE tokens |");
        md.AppendLine("| --- | ---: | ---: | ---: |");
        foreach (var c in stats.Categories)
            md.AppendLine(inv, $"| {c.Category} | {c.Papers:N0} | {c.Percent:F2} | {c.Tokens:N0} |");
        md.AppendLine(inv, $"| total | {stats.Categories.Sum(c => c.Papers):N0} | 100 | {stats.Categories.Sum(c => c.Tokens):N0} |");
        md.AppendLine();
        md.AppendLine("## Splits (Table 2)");
        md.AppendLine();
        md.AppendLine("| split | papers | BPE tokens | " + string.Join(" | ", stats.Categories.Select(c => c.Category + " papers")) + " |");
        md.AppendLine("| --- | ---: | ---: | " + string.Join(" | ", stats.Categories.Select(_ => "---:")) + " |");
        foreach (var s in stats.Splits)
            md.AppendLine(string.Create(inv, $"| {s.Split} | {s.Papers:N0} | {s.Tokens:N0} | ") + string.Join(" | ", stats.Categories.Select(c => s.PapersByCategory[c.Category].ToString("N0", inv))) + " |");
        md.AppendLine();
        md.AppendLine("## Rows not used");
        md.AppendLine();
        md.AppendLine("| reason | rows |");
        md.AppendLine("| --- | ---: |");
        md.AppendLine(inv, $"| category not selected | {stats.OtherCategory:N0} |");
        md.AppendLine(inv, $"| arXiv id seen before | {stats.DuplicateId:N0} |");
        md.AppendLine(inv, $"| empty title | {stats.EmptyTitle:N0} |");
        md.AppendLine(inv, $"| empty abstract | {stats.EmptyAbstract:N0} |");
        md.AppendLine(inv, $"| no arXiv id | {stats.MissingId:N0} |");
        md.AppendLine(inv, $"| rows read | {stats.RowsRead:N0} |");
        return md.ToString();
    }

    // arXiv names label the tables: the <|AI|> tags' pipes would split markdown table cells.
    private static string Tag(ArxivCategory c) => PaperFormat.ArxivName(c);

    // "1706.03762v5" and "1706.03762" are the same paper.
    [GeneratedRegex(@"v\d+$")]
    private static partial Regex VersionSuffix();
}
