using System.CommandLine;
using OrleansGpt.Training.Quality;

namespace OrleansGpt.Training.Cli;

/// <summary>quality: the quality table of generated abstracts against real ones.</summary>
internal static class QualityCommand
{
    public static void AddTo(RootCommand root)
    {
        var samples = new Option<string>("--samples") { Description = "Generated abstracts, JSONL: {category, title, text[, source, finish_reason]} per line (Client -- appendix writes one)", Required = true };
        var data = new Option<string>("--data") { Description = "A prepared data directory: its eval papers are the reference row, its training papers the novelty check and the classifier's data", Required = true };
        var output = new Option<string>("--out") { Description = "Where quality.md and quality.json go", DefaultValueFactory = _ => "quality" };
        var reference = new Option<int>("--reference-papers") { Description = "Eval papers in the reference row (the first N, as eval reports)", DefaultValueFactory = _ => 1000 };
        var classifier = new Option<int>("--classifier-papers") { Description = "Training papers the category classifier learns from", DefaultValueFactory = _ => 20000 };
        var command = new Command("quality", "Diversity, repetition, novelty, category accuracy, topicality and nearest-real-abstract retrieval of generated abstracts beside real ones (markdown and JSON)")
        {
            samples, data, output, reference, classifier,
        };
        command.SetHandler(r =>
        {
            // The sample file is read (and refused, naming the line) before any work or any file is written.
            var generated = Samples.ReadJsonl(r.GetValue(samples)!);
            string dataDirectory = r.GetValue(data)!;
            var table = QualityReport.Build(generated, dataDirectory, Console.Out, r.GetValue(reference), r.GetValue(classifier));
            string description = $"Quality of {generated.Count:N0} abstracts from {Path.GetFileName(r.GetValue(samples))} against the first {table.Rows[0].Samples:N0} eval papers of {Path.GetFullPath(dataDirectory)}.";
            QualityReport.Write(table, r.GetValue(output)!, description);
            Console.Write(QualityReport.Markdown(table, description));
            Console.WriteLine($"wrote {Path.Combine(Path.GetFullPath(r.GetValue(output)!), "quality.md")} and quality.json");
            return 0;
        });
        root.Subcommands.Add(command);
    }
}
