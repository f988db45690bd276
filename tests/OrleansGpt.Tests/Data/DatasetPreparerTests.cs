using OrleansGpt.Training.Data;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Tests.Data;

public sealed class DatasetPreparerTests
{
    [Fact]
    public void KeepsTheChosenCategoriesOncePerIdAndCountsEverythingItSkips()
    {
        using var dir = TestModels.TempDir();
        string a = TestData.Write(dir.Sub("a.tsv"), [
            TestData.Row(0, "2501.00001", "cs.CL", "Parsing", "About parsing."),
            TestData.Row(1, "2501.00002", "cs.RO", "Robots", "About robots.", "cs.RO,cs.CV"),
            TestData.Row(2, "2501.00003", "cs.CV", "", "No title."),
            TestData.Row(3, "2501.00004", "cs.AI", "No abstract", "  \n "),
            TestData.Row(4, "2501.00001v2", "cs.CL", "Parsing again", "The same paper, a later version."),
        ]);
        string b = TestData.Write(dir.Sub("b.tsv.gz"), [TestData.Row(0, "2501.00005", "cs.LG", "Learning", "About learning.")]);

        var stats = DatasetPreparer.Run(new PrepareOptions { Inputs = [a, b], OutputDirectory = dir.Sub("out"), EvalFraction = 0 });
        Assert.Equal((6L, 1L, 1L, 1L, 1L), (stats.RowsRead, stats.OtherCategory, stats.DuplicateId, stats.EmptyTitle, stats.EmptyAbstract));
        Assert.Equal([("cs.AI", 0L), ("cs.LG", 1L), ("cs.CL", 1L), ("cs.CV", 0L)], stats.Categories.Select(c => (c.Category, c.Papers)));

        // The first-listed rule reads the categories column instead: the robotics paper lists cs.RO first too.
        var firstListed = DatasetPreparer.Run(new PrepareOptions { Inputs = [a], OutputDirectory = dir.Sub("out2"), EvalFraction = 0, Rule = CategoryRule.FirstListed });
        Assert.Equal(1L, firstListed.OtherCategory);

        // The token file holds exactly the formatted examples, in input order.
        using var train = TokenSplit.Open(dir.Sub("out"), "train");
        var tokenizer = Gpt2Tokenizer.Shared;
        int[] expected = [.. PaperFormat.EncodeExample(tokenizer, ArxivCategory.CL, "Parsing", "About parsing."),
            .. PaperFormat.EncodeExample(tokenizer, ArxivCategory.LG, "Learning", "About learning.")];
        Assert.Equal(expected, train.Slice(0, (int)train.TokenCount).ToArray().Select(t => (int)t));
        Assert.Equal([ArxivCategory.CL, ArxivCategory.LG], train.Examples.Select(e => e.Category));
        Assert.Equal(stats.Splits[0].Tokens, train.TokenCount);
        Assert.Equal(stats.Categories.Sum(c => c.Tokens), train.TokenCount);
        Assert.Contains("| arXiv id seen before | 1 |", File.ReadAllText(Path.Combine(dir.Sub("out"), DatasetPreparer.StatsMarkdown)));
    }

    [Fact]
    public void EachPaperLandsInTheSameSplitWhateverElseIsInTheFile()
    {
        using var dir = TestModels.TempDir();
        var rows = Enumerable.Range(0, 200).Select(i => TestData.Row(i, $"2502.{i:D5}", "cs.CL", $"Title {i}", $"Abstract {i}.")).ToList();
        string all = TestData.Write(dir.Sub("all.tsv"), rows);
        string half = TestData.Write(dir.Sub("half.tsv"), rows.Where((_, i) => i % 2 == 0));
        var full = DatasetPreparer.Run(new PrepareOptions { Inputs = [all], OutputDirectory = dir.Sub("all"), Seed = 5 });
        DatasetPreparer.Run(new PrepareOptions { Inputs = [half], OutputDirectory = dir.Sub("half"), Seed = 5 });

        var evalAll = EvalTitles(dir.Sub("all"));
        var evalHalf = EvalTitles(dir.Sub("half"));
        Assert.Equal(evalAll.Where(t => int.Parse(t.Split(' ')[1]) % 2 == 0).Order(), evalHalf.Order());
        Assert.InRange(full.Splits[1].Papers, 8, 35); // ~10% of 200
        Assert.Equal(evalAll, EvalTitlesAfterRerun(all, dir.Sub("again")));
    }

    [Fact]
    public void TheRealCsClFileGivesTheArchivesPrimaryCounts()
    {
        using var dir = TestModels.TempDir();
        string file = Path.Combine(TestData.SharedData, "geiger-2019", "cs.CL.tsv.gz");
        var stats = DatasetPreparer.Run(new PrepareOptions { Inputs = [file], OutputDirectory = dir.Sub("cl") });
        // The data README: 11,636 papers; primary cs.CL 8,343, cs.LG 367, cs.AI 350, cs.CV 265.
        Assert.Equal(11_636, stats.RowsRead);
        Assert.Equal([350L, 367L, 8_343L, 265L], stats.Categories.Select(c => c.Papers));
        Assert.Equal(stats.Categories.Sum(c => c.Papers), stats.Splits.Sum(s => s.Papers));
        double evalShare = (double)stats.Splits[1].Papers / stats.Splits.Sum(s => s.Papers);
        Assert.InRange(evalShare, 0.09, 0.11);
    }

    [Fact]
    public void BadOptionsAndMissingFilesFailBeforeWritingAnything()
    {
        using var dir = TestModels.TempDir();
        Assert.Throws<FileNotFoundException>(() => DatasetPreparer.Run(new PrepareOptions { Inputs = [dir.Sub("nope.tsv")], OutputDirectory = dir.Sub("out") }));
        Assert.Throws<ArgumentOutOfRangeException>(() => DatasetPreparer.Run(new PrepareOptions { Inputs = [dir.Sub("nope.tsv")], OutputDirectory = dir.Sub("out"), EvalFraction = 1 }));
        Assert.False(Directory.Exists(dir.Sub("out")));
    }

    private static List<string> EvalTitles(string prepared)
    {
        using var eval = TokenSplit.Open(prepared, "eval");
        var tokenizer = Gpt2Tokenizer.Shared;
        return [.. eval.Examples.Select(e =>
        {
            var ids = eval.Slice(e.Offset, e.Length).ToArray().Select(t => (int)t).ToArray();
            string text = tokenizer.Decode(ids.TakeWhile(id => id != Gpt2Tokenizer.Separator));
            return text["<|CL|> ".Length..];
        })];
    }

    private static List<string> EvalTitlesAfterRerun(string input, string output)
    {
        DatasetPreparer.Run(new PrepareOptions { Inputs = [input], OutputDirectory = output, Seed = 5 });
        return EvalTitles(output);
    }
}
