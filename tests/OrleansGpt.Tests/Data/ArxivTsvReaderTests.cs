using OrleansGpt.Training.Data;

namespace OrleansGpt.Tests.Data;

public sealed class ArxivTsvReaderTests
{
    [Theory]
    [InlineData("papers.tsv")]
    [InlineData("papers.tsv.gz")]
    public void ReadsQuotedFieldsWithTabsQuotesAndLineBreaksPlainOrGzip(string name)
    {
        using var dir = TestModels.TempDir();
        string path = TestData.Write(dir.Sub(name), [
            TestData.Row(0, "2501.00001", "cs.CL", "A \"quoted\" title", "Line one\nline two\twith a tab", "cs.CL,cs.AI"),
            TestData.Row(1, "2501.00002v3", "cs.CV", "Plain", "Plain abstract"),
        ]);
        using var reader = new ArxivTsvReader(path);
        var papers = reader.ReadAll().ToList();
        Assert.Equal(2, papers.Count);
        Assert.Equal("A \"quoted\" title", papers[0].Title);
        Assert.Equal("Line one\nline two\twith a tab", papers[0].Abstract);
        Assert.Equal(["cs.CL", "cs.AI"], papers[0].Categories);
        Assert.Equal(("2501.00002v3", "cs.CV", 4L), (papers[1].ArxivId, papers[1].PrimaryCategory, papers[1].Line)); // row 1 spans lines 2-3
    }

    [Fact]
    public void AWrongHeaderNamesTheFileLineAndMissingColumns()
    {
        using var dir = TestModels.TempDir();
        string path = TestData.Write(dir.Sub("bad.tsv"), [], header: "\tabstract\tarxiv_id\ttitle");
        var e = Assert.Throws<InvalidDataException>(() => new ArxivTsvReader(path));
        Assert.Equal($"{path}:1: the header lacks column(s) categories, primary_cat; found abstract, arxiv_id, title", e.Message);

        string noIndex = TestData.Write(dir.Sub("noindex.tsv"), [], header: TestData.Header.TrimStart('\t'));
        Assert.Contains("unnamed index column", Assert.Throws<InvalidDataException>(() => new ArxivTsvReader(noIndex)).Message);
    }

    [Fact]
    public void BrokenQuotingFailsWithFileLineAndReason()
    {
        using var dir = TestModels.TempDir();
        string good = TestData.Row(0, "2501.00001", "cs.CL", "T", "A");
        string unclosed = TestData.Write(dir.Sub("unclosed.tsv"), [good, "1\t\"never closed\tx"]);
        var e = Assert.Throws<InvalidDataException>(() => new ArxivTsvReader(unclosed).ReadAll().ToList());
        Assert.Equal($"{unclosed}:3: a quoted field is never closed (unbalanced '\"')", e.Message);

        string stray = TestData.Write(dir.Sub("stray.tsv"), [good, good, "2\t\"closed\"oops" + new string('\t', 14)]);
        e = Assert.Throws<InvalidDataException>(() => new ArxivTsvReader(stray).ReadAll().ToList());
        Assert.Equal($"{stray}:4: unexpected 'o' after a closing quote (a quote inside a quoted field must be doubled)", e.Message);

        string shortRow = TestData.Write(dir.Sub("short.tsv"), [good, "3\tonly\tthree"]);
        e = Assert.Throws<InvalidDataException>(() => new ArxivTsvReader(shortRow).ReadAll().ToList());
        Assert.Equal($"{shortRow}:3: the row has 3 fields, the header has 15", e.Message);
    }

    [Fact]
    public void ReadsXzCompressedFilesAsTheArchiveShipsThem()
    {
        // Fixtures/papers.tsv.xz: three rows in the archive's layout, compressed with xz 5.4.
        using var reader = new ArxivTsvReader(Path.Combine(AppContext.BaseDirectory, "Fixtures", "papers.tsv.xz"));
        var papers = reader.ReadAll().ToList();
        Assert.Equal(["Parsing Things", "Robots", "Seeing Cats"], papers.Select(p => p.Title));
        Assert.Equal("We study \"parsing\" with\nline breaks.", papers[0].Abstract);
        Assert.Equal(["cs.CL", "cs.RO", "cs.CV"], papers.Select(p => p.PrimaryCategory));
    }
}
