using System.CommandLine;
using System.Diagnostics;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Training.Cli;

/// <summary>prepare: arXiv Archive TSV to token files and the paper's data tables.</summary>
internal static class DataCommands
{
    public static void AddTo(RootCommand root)
    {
        var inputs = new Option<string[]>("--input") { Description = "arXiv Archive TSV file, plain, .gz or .xz (repeat for several)", Required = true, Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out") { Description = "Directory to write train/eval token files and stats to", Required = true };
        var categories = new Option<string>("--categories") { Description = "arXiv categories to keep", DefaultValueFactory = _ => "cs.AI,cs.LG,cs.CL,cs.CV" };
        var rule = new Option<string>("--category-rule") { Description = "Which category decides: primary (primary_cat) or first-listed (first of categories)", DefaultValueFactory = _ => "primary" };
        rule.AcceptOnlyFromAmong("primary", "first-listed");
        var evalFraction = new Option<double>("--eval-fraction") { Description = "Share of papers in the eval split", DefaultValueFactory = _ => 0.1 };
        var seed = new Option<long>("--seed") { Description = "Salt of the split hash (same seed, same split for every arXiv id)", DefaultValueFactory = _ => 42 };
        var command = new Command("prepare", "Read arXiv Archive TSV files, keep the chosen categories, split 90/10 by arXiv id and write token files plus stats.md/stats.json")
        {
            inputs, output, categories, rule, evalFraction, seed,
        };
        command.SetHandler(r =>
        {
            var sw = Stopwatch.StartNew();
            var stats = DatasetPreparer.Run(new PrepareOptions
            {
                Inputs = r.GetValue(inputs)!,
                OutputDirectory = r.GetValue(output)!,
                Categories = [.. r.GetValue(categories)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(PaperFormat.ParseCategory).Distinct()],
                Rule = r.GetValue(rule) == "first-listed" ? CategoryRule.FirstListed : CategoryRule.Primary,
                EvalFraction = r.GetValue(evalFraction),
                Seed = r.GetValue(seed),
            }, Console.Error);
            Console.WriteLine(DatasetPreparer.ToMarkdown(stats));
            Console.Error.WriteLine($"wrote {r.GetValue(output)} in {sw.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        root.Subcommands.Add(command);
        root.Subcommands.Add(TitlesCommand());
    }

    /// <summary>titles: the first N papers of a split as the appendix job's TSV, so a model can write abstracts for
    /// exactly the eval papers that `eval` and `quality` measure.</summary>
    private static Command TitlesCommand()
    {
        var data = new Option<string>("--data") { Description = "A directory written by prepare", Required = true };
        var split = new Option<string>("--split") { Description = "Which split's papers", DefaultValueFactory = _ => "eval" };
        split.AcceptOnlyFromAmong("eval", "train");
        var count = new Option<int>("--count") { Description = "The first N papers of the split", DefaultValueFactory = _ => 100 };
        var output = new Option<string>("--out") { Description = "TSV file to write (header category<TAB>title), the input of Client -- appendix", Required = true };
        var command = new Command("titles", "Write the first N titles of a prepared split as category<TAB>title rows for Client -- appendix") { data, split, count, output };
        command.SetHandler(r =>
        {
            if (r.GetValue(count) < 1)
                throw new ArgumentOutOfRangeException(nameof(count), r.GetValue(count), "--count must be at least 1");
            var papers = Quality.Samples.ReadSplit(r.GetValue(data)!, r.GetValue(split)!, r.GetValue(count));
            var text = new System.Text.StringBuilder("category\ttitle\n");
            foreach (var paper in papers)
                text.Append(PaperFormat.ArxivName(paper.Category)).Append('\t').Append(PaperFormat.NormalizeWhitespace(paper.Title)).Append('\n');
            IO.AtomicWrite.Text(r.GetValue(output)!, text.ToString());
            Console.WriteLine($"wrote {papers.Count:N0} titles of the {r.GetValue(split)} split to {r.GetValue(output)}");
            return 0;
        });
        return command;
    }
}
