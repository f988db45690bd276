using System.Text.Json;
using OrleansGpt.Tests.Cli;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Quality;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Tests.Quality;

public sealed class QualityTests
{
    [Fact]
    public void DiversityAndRepetitionMeasuresGiveTheirTextbookValues()
    {
        string[][] texts = [TextMeasures.Words("A b a b"), TextMeasures.Words("c d")];
        Assert.Equal(4 / 6.0, TextMeasures.Distinct(texts, 1), 6); // a, b, c, d of six words
        Assert.Equal(3 / 4.0, TextMeasures.Distinct(texts, 2), 6); // "a b" twice, "b a", "c d"
        string[] one = TextMeasures.Words("we study the effect of noise on robust training of deep networks");
        Assert.Equal(1.0, TextMeasures.SelfBleu4([one, one, one]), 6);
        Assert.True(TextMeasures.SelfBleu4([one, TextMeasures.Words("images of cats sit quietly beside warm windows in winter")]) < 0.1);
        // Frequencies exactly 1000 / rank: a Zipf coefficient of 1.
        var zipf = Enumerable.Range(1, 50).SelectMany(r => Enumerable.Repeat($"w{r}", 1000 / r)).ToArray();
        Assert.Equal(1.0, TextMeasures.Zipf([zipf]), 1);
        Assert.Equal(0.5, TextMeasures.RepetitionRate([TextMeasures.Words("go on and on go on and on go on and on"), one]));
    }

    [Fact]
    public void TheQualityCommandComparesSourcesWithRealAbstracts()
    {
        using var temp = TestModels.TempDir();
        string data = SeparablePapers(temp.Path);
        var copied = Samples.ReadSplit(data, "train", 1)[0];
        string samples = temp.Sub("samples.jsonl");
        var lines = new List<object>();
        foreach (var (category, words) in s_vocabulary)
        {
            lines.Add(new { source = "model-a", category, title = $"On {words[0]} and {words[1]}", text = Abstract(category, 7, 40), finish_reason = "stop" });
            lines.Add(new { source = "model-a", category, title = $"More {words[2]}", text = string.Join(' ', Enumerable.Repeat($"{words[3]} {words[4]} {words[5]} {words[0]}", 4)), finish_reason = "length" });
        }
        lines.Add(new { source = "copycat", category = copied.Category.ToString(), title = copied.Title, text = copied.Text, finish_reason = "stop" });
        // Eval papers' titles: "retold" writes each its own abstract's words backwards (the same bag of words, no 4-gram
        // of it), "off-topic" gives each the abstract of the next paper of its category (right category, wrong paper).
        var eval = Samples.ReadSplit(data, "eval", 40);
        foreach (var paper in eval)
        {
            lines.Add(new { source = "retold", category = paper.Category.ToString(), title = paper.Title, text = string.Join(' ', TextMeasures.Words(paper.Text).Reverse()), finish_reason = "stop" });
            var next = eval.SkipWhile(p => p != paper).Skip(1).Concat(eval).First(p => p != paper && p.Category == paper.Category);
            lines.Add(new { source = "off-topic", category = paper.Category.ToString(), title = paper.Title, text = next.Text, finish_reason = "stop" });
        }
        File.WriteAllLines(samples, lines.Select(l => JsonSerializer.Serialize(l)));

        var result = TrainingCli.Run("quality", "--samples", samples, "--data", data, "--out", temp.Sub("report"), "--reference-papers", "200");
        Assert.True(result.ExitCode == 0, result.Stderr + result.Stdout);
        using var report = JsonDocument.Parse(File.ReadAllText(temp.Sub("report/quality.json")));
        var rows = report.RootElement.GetProperty("rows").EnumerateArray().ToDictionary(r => r.GetProperty("source").GetString()!);
        Assert.Equal(["real", "model-a", "copycat", "retold", "off-topic"], report.RootElement.GetProperty("rows").EnumerateArray().Select(r => r.GetProperty("source").GetString()));
        Assert.True(rows["real"].GetProperty("category_agreement").GetDouble() > 0.9, rows["real"].ToString()); // the classifier's accuracy
        Assert.True(rows["model-a"].GetProperty("category_agreement").GetDouble() >= 0.75, rows["model-a"].ToString());
        Assert.Equal(0.5, rows["model-a"].GetProperty("repetition_rate").GetDouble());
        Assert.Equal(0.5, rows["model-a"].GetProperty("ended_by_itself").GetDouble());
        // Opening mid-sentence: model-a's looping half starts lower-case, as does every abstract retold backwards.
        Assert.Equal(1.0, rows["real"].GetProperty("starts_a_sentence").GetDouble());
        Assert.Equal(0.5, rows["model-a"].GetProperty("starts_a_sentence").GetDouble());
        Assert.Equal(0.0, rows["retold"].GetProperty("starts_a_sentence").GetDouble());
        Assert.Equal(1.0, rows["off-topic"].GetProperty("starts_a_sentence").GetDouble());
        Assert.Equal(1.0, rows["copycat"].GetProperty("found_in8_grams").GetDouble());
        Assert.Equal(TextMeasures.Words(copied.Text).Length, rows["copycat"].GetProperty("longest_copied").GetInt32());
        Assert.True(rows["model-a"].GetProperty("longest_copied").GetInt32() < TextMeasures.Words(copied.Text).Length);
        Assert.Contains("| copycat | 1 |", File.ReadAllText(temp.Sub("report/quality.md")));

        // Nearest real abstract, over the 40 eval papers the titles name (the copycat's title is a training paper's).
        Assert.Equal(40, report.RootElement.GetProperty("retrieval_papers").GetInt32());
        double Top(string source, int k) => rows[source].GetProperty("nearest_is_own").GetProperty($"top{k}").GetDouble();
        Assert.Equal(40, rows["retold"].GetProperty("nearest_is_own").GetProperty("queries").GetInt32());
        Assert.Equal(1.0, Top("real", 1));   // the ceiling
        Assert.Equal(1.0, Top("retold", 1)); // word order does not matter to a bag of words
        Assert.True(Top("off-topic", 1) <= 0.1, rows["off-topic"].ToString());
        Assert.True(rows["off-topic"].GetProperty("category_agreement").GetDouble() >= 0.9, rows["off-topic"].ToString()); // what the category column cannot see
        Assert.Equal(JsonValueKind.Null, rows["model-a"].GetProperty("nearest_is_own").ValueKind); // no title of the pool
        Assert.Equal(JsonValueKind.Null, report.RootElement.GetProperty("category_note").ValueKind);
    }

    [Fact]
    public void WithOneCategoryTheReportSaysWhyCategoryAgreementIsMissingAndWritesTheRest()
    {
        using var temp = TestModels.TempDir();
        string data = SeparablePapers(temp.Path, ArxivCategory.CL);
        var paper = Samples.ReadSplit(data, "eval", 1)[0];
        string samples = temp.Sub("samples.jsonl");
        File.WriteAllLines(samples, [JsonSerializer.Serialize(new { category = "CL", title = paper.Title, text = Abstract("CL", 3, 50), finish_reason = "stop" })]);

        var result = TrainingCli.Run("quality", "--samples", samples, "--data", data, "--out", temp.Sub("report"));
        Assert.True(result.ExitCode == 0, result.Stderr + result.Stdout);
        using var report = JsonDocument.Parse(File.ReadAllText(temp.Sub("report/quality.json")));
        Assert.Contains("only cs.CL", report.RootElement.GetProperty("category_note").GetString());
        foreach (var row in report.RootElement.GetProperty("rows").EnumerateArray())
        {
            Assert.Equal(JsonValueKind.Null, row.GetProperty("category_agreement").ValueKind);
            Assert.True(row.GetProperty("distinct1").GetDouble() > 0, row.ToString());
        }
        Assert.Contains("classifier needs at least two categories", File.ReadAllText(temp.Sub("report/quality.md")));
    }

    [Fact]
    public void AMalformedSampleFileIsRefusedNamingTheLineAndNothingIsWritten()
    {
        using var temp = TestModels.TempDir();
        string data = SeparablePapers(temp.Path);
        string samples = temp.Sub("bad.jsonl");
        File.WriteAllLines(samples, ["{\"category\": \"CL\", \"title\": \"Fine\", \"text\": \"words\"}", "{\"category\": \"CL\", \"text\": \"no title\"}"]);
        var result = TrainingCli.Run("quality", "--samples", samples, "--data", data, "--out", temp.Sub("report"));
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("bad.jsonl:2:", result.Stderr);
        Assert.Contains("\"title\"", result.Stderr);
        Assert.False(Directory.Exists(temp.Sub("report")));
    }

    private static readonly (string Category, string[] Words)[] s_vocabulary =
    [
        ("AI", ["agent", "planning", "reasoning", "knowledge", "search", "logic"]),
        ("LG", ["gradient", "loss", "optimizer", "regularization", "generalization", "kernel"]),
        ("CL", ["language", "translation", "parsing", "sentence", "corpus", "dialogue"]),
        ("CV", ["image", "pixel", "segmentation", "camera", "detection", "video"]),
    ];

    private static readonly string[] s_shared = ["we", "propose", "method", "results", "show", "novel", "approach", "experiments", "state", "art"];

    /// <summary>An abstract mostly of its category's own words, with shared filler.</summary>
    private static string Abstract(string category, int seed, int words)
    {
        var own = s_vocabulary.Single(v => v.Category == category).Words;
        var r = new Random(seed);
        string text = string.Join(' ', Enumerable.Range(0, words).Select(_ => r.Next(3) == 0 ? s_shared[r.Next(s_shared.Length)] : own[r.Next(own.Length)])) + ".";
        return char.ToUpperInvariant(text[0]) + text[1..]; // opens as a sentence, as real abstracts do
    }

    /// <summary>A prepared data set whose categories have their own vocabularies, so a classifier can learn them.</summary>
    private static string SeparablePapers(string root, params ArxivCategory[] only)
    {
        var rows = Enumerable.Range(0, 400).Select(i =>
        {
            var (category, words) = s_vocabulary[i % 4];
            return TestData.Row(i, $"2501.{i:D5}", $"cs.{category}", $"Paper {i} on {words[i % words.Length]}", Abstract(category, i, 60));
        });
        string tsv = TestData.Write(Path.Combine(root, "papers.tsv"), rows);
        string output = Path.Combine(root, "prepared");
        DatasetPreparer.Run(new PrepareOptions { Inputs = [tsv], OutputDirectory = output, EvalFraction = 0.2, Seed = 1, Categories = only.Length > 0 ? only : Enum.GetValues<ArxivCategory>() });
        return output;
    }
}
