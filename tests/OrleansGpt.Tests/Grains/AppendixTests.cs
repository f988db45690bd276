using OrleansGpt.Client;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Tests.Grains;

/// <summary>The appendix batch job against the test cluster.</summary>
[Collection(nameof(ClusterCollection))]
public sealed class AppendixTests(ClusterFixture fixture)
{
    [Fact]
    public async Task EveryTitleGetsExactlyOneReproducibleSampleInInputOrder()
    {
        using var temp = TestModels.TempDir();
        string titles = Path.Combine(temp.Path, "titles.tsv");
        File.WriteAllText(titles, "category\ttitle\ncs.AI\tKnowledge Patterns\n\ncs.CV\tSeeing Cats\ncs.CL\tAttention Is All You Need\n");
        string first = Path.Combine(temp.Path, "appendix.md"), second = Path.Combine(temp.Path, "again.md");
        var sampling = new SamplingOptions(MaxTokens: 8);

        await AppendixCommand.RunAsync(fixture.Client, titles, first, "tiny", sampling, seed: 100, concurrency: 2, TextWriter.Null);
        await AppendixCommand.RunAsync(fixture.Client, titles, second, "tiny", sampling, seed: 100, concurrency: 3, TextWriter.Null);

        string text = File.ReadAllText(first);
        Assert.Equal(text, File.ReadAllText(second)); // same seeds, same abstracts, whatever the concurrency
        int[] positions = [.. new[] { "## [cs.AI] Knowledge Patterns", "## [cs.CV] Seeing Cats", "## [cs.CL] Attention Is All You Need" }.Select(h => text.IndexOf(h, StringComparison.Ordinal))];
        Assert.All(positions, p => Assert.True(p >= 0));
        Assert.Equal(positions.Order(), positions);
        var seedLines = text.Split('\n').Where(l => l.StartsWith("*seed", StringComparison.Ordinal)).ToList();
        Assert.Equal(["*seed 101,", "*seed 102,", "*seed 103,"], seedLines.Select(l => l.Split(' ')[0] + " " + l.Split(' ')[1]));

        // Each sample is the one the model gives for that seed: the first draw, not a chosen one.
        var direct = new System.Text.StringBuilder();
        await foreach (var piece in fixture.Grains.WriteAbstractAsync(new AbstractRequest("cs.CV", "Seeing Cats", "tiny", sampling with { Seed = 102 })))
            direct.Append(piece.Text);
        Assert.Contains("## [cs.CV] Seeing Cats\n\n" + direct.ToString().Trim() + "\n\n*seed 102, ", text);

        // The same samples as JSONL beside the markdown, as `Training -- quality --samples` reads them.
        var samples = OrleansGpt.Training.Quality.Samples.ReadJsonl(Path.ChangeExtension(first, ".jsonl"));
        Assert.Equal(["Knowledge Patterns", "Seeing Cats", "Attention Is All You Need"], samples.Select(x => x.Title));
        Assert.Equal(direct.ToString().Trim(), samples[1].Text);
        Assert.All(samples, x => Assert.NotNull(x.EndedByItself));
        Assert.All(samples, x => Assert.StartsWith("tiny ", x.Source));
        // How each ended is said under it, and counted at the top.
        Assert.Equal(samples.Select(x => x.EndedByItself == true ? "ended by itself*" : "cut at the 8-token limit*"), seedLines.Select(l => l[(l.IndexOf(", ", StringComparison.Ordinal) + 2)..]));
        Assert.Contains($"{samples.Count(x => x.EndedByItself == true)} of 3 ended by themselves", text);
        Assert.Equal(samples.Any(x => x.EndedByItself != true), text.Contains("the others were cut", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ManyAbstractsStreamAtOnce()
    {
        // More concurrent streams than a silo has cores, so a stateless worker runs several activations (a burst of
        // more than the fixture's 8 queue places would be refused as busy).
        var writes = Enumerable.Range(0, 8).Select(async i =>
        {
            var text = new System.Text.StringBuilder();
            await foreach (var piece in fixture.Grains.WriteAbstractAsync(new AbstractRequest("CL", $"Paper {i}", "tiny", new SamplingOptions(MaxTokens: 40, Seed: i))))
                text.Append(piece.Text);
            return text.ToString();
        });
        Assert.All(await Task.WhenAll(writes), text => Assert.False(string.IsNullOrWhiteSpace(text)));
    }

    [Fact]
    public async Task BadInputNamesTheLineAndWritesNothing()
    {
        using var temp = TestModels.TempDir();
        string output = Path.Combine(temp.Path, "appendix.md");
        string noHeader = Path.Combine(temp.Path, "no-header.tsv");
        File.WriteAllText(noHeader, "cs.AI\tKnowledge Patterns\n");
        var missing = await Assert.ThrowsAsync<ArgumentException>(() => AppendixCommand.RunAsync(fixture.Client, noHeader, output, "tiny", new SamplingOptions(MaxTokens: 4), 1, 1, TextWriter.Null));
        Assert.Contains("no-header.tsv:1: expected the header", missing.Message);

        string badCategory = Path.Combine(temp.Path, "bad.tsv");
        File.WriteAllText(badCategory, "category\ttitle\ncs.AI\tKnowledge Patterns\ncs.RO\tRobots\n");
        var category = await Assert.ThrowsAsync<ArgumentException>(() => AppendixCommand.RunAsync(fixture.Client, badCategory, output, "tiny", new SamplingOptions(MaxTokens: 4), 1, 1, TextWriter.Null));
        Assert.Contains("bad.tsv:3:", category.Message);
        Assert.False(File.Exists(output));
    }
}
