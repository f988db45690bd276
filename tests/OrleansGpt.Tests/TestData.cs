using System.IO.Compression;
using System.Text;
using OrleansGpt.Training.Data;

namespace OrleansGpt.Tests;

/// <summary>Small arXiv Archive TSV files written by the tests, and the shared real data.</summary>
internal static class TestData
{
    public const string Header = "\tabstract\tacm_class\tarxiv_id\tauthor_text\tcategories\tcomments\tcreated\tdoi\tnum_authors\tnum_categories\tprimary_cat\ttitle\tupdated\tcategories_list";

    /// <summary>One row as the archive writes it (Python csv quoting: fields with tabs, quotes or line breaks
    /// are quoted, quotes doubled).</summary>
    public static string Row(int index, string id, string primary, string title, string abstractText, string? categories = null)
    {
        categories ??= primary;
        string[] fields = [index.ToString(), abstractText, "", id, "A. Author", categories, "", "2025-01-01", "", "1", "1", primary, title, "", $"['{primary}']"];
        return string.Join('\t', fields.Select(Quote));
    }

    public static string Quote(string field) =>
        field.IndexOfAny(['\t', '"', '\n', '\r']) >= 0 ? "\"" + field.Replace("\"", "\"\"") + "\"" : field;

    /// <summary>Writes a TSV file (gzip when the name ends in .gz).</summary>
    public static string Write(string path, IEnumerable<string> rows, string header = Header)
    {
        var text = header + "\n" + string.Join("\n", rows) + "\n";
        var bytes = Encoding.UTF8.GetBytes(text);
        if (path.EndsWith(".gz", StringComparison.Ordinal))
        {
            using var file = File.Create(path);
            using var gz = new GZipStream(file, CompressionLevel.Fastest);
            gz.Write(bytes);
        }
        else
        {
            File.WriteAllBytes(path, bytes);
        }
        return path;
    }

    private static readonly string[] s_words = ["neural", "model", "language", "vision", "learning", "graph", "transformer", "data", "attention", "agent",
        "policy", "image", "segmentation", "benchmark", "robust", "efficient", "training", "inference", "reasoning", "retrieval"];

    /// <summary>A deterministic pseudo-abstract of about <paramref name="words"/> words.</summary>
    public static string Words(int seed, int words)
    {
        var r = new Random(seed);
        return string.Join(' ', Enumerable.Range(0, words).Select(_ => s_words[r.Next(s_words.Length)])) + ".";
    }

    /// <summary>A prepared directory of <paramref name="papers"/> synthetic papers across the four categories.</summary>
    public static string Prepared(string root, int papers = 60, int words = 40)
    {
        string[] categories = ["cs.AI", "cs.LG", "cs.CL", "cs.CV"];
        var rows = Enumerable.Range(0, papers).Select(i => Row(i, $"2501.{i:D5}", categories[i % 4], $"Paper {i}: {Words(i + 1000, 6)}", Words(i, words)));
        string tsv = Write(Path.Combine(root, "papers.tsv"), rows);
        string output = Path.Combine(root, "prepared");
        DatasetPreparer.Run(new PrepareOptions { Inputs = [tsv], OutputDirectory = output, EvalFraction = 0.2, Seed = 1 });
        return output;
    }

    /// <summary>The repository's root (where OrleansGpt.sln is).</summary>
    public static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "OrleansGpt.sln")))
                    return dir.FullName;
            throw new DirectoryNotFoundException("Could not find the repository root (OrleansGpt.sln) above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>../shared/data beside the repository (CI lays a copy there too).</summary>
    public static string SharedData
    {
        get
        {
            string shared = Path.GetFullPath(Path.Combine(RepositoryRoot, "..", "shared", "data"));
            return Directory.Exists(shared) ? shared : throw new DirectoryNotFoundException($"The shared data folder {shared} is missing; tests read the real arXiv files from there");
        }
    }
}
