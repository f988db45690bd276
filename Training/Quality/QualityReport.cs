using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using OrleansGpt.Training.IO;

namespace OrleansGpt.Training.Quality;

/// <summary>One row of the quality table: the measures of one source's abstracts.</summary>
/// <param name="EndedByItself">Share that ended with &lt;|endoftext|&gt; rather than at the token limit; null when the
/// samples do not say.</param>
/// <param name="StartsASentence">Share that open as an abstract does rather than mid-sentence
/// (<see cref="TextMeasures.StartsASentence"/>).</param>
/// <param name="FoundIn4Grams">Share of the source's word 4-grams that occur in some training abstract (8-grams alike).</param>
/// <param name="LongestCopied">Longest run of words, over all the source's abstracts, whose every 8-gram occurs in training
/// abstracts: a lower bound on verbatim copying (0 when no 8-gram matches).</param>
/// <param name="CategoryAgreement">How often a classifier trained on the training split gives the requested category; null
/// when the training split holds fewer than two categories (<see cref="QualityTable.CategoryNote"/> says so).</param>
/// <param name="Topicality">Mean share of the title's content words that the abstract uses.</param>
/// <param name="NearestIsOwn">How often the abstract's nearest real abstract (TF-IDF cosine) is its own paper's, over the
/// table's retrieval pool; null when none of the source's titles is a paper of the pool.</param>
public sealed record QualityRow(
    string Source, int Samples, double Distinct1, double Distinct2, double Distinct3, double SelfBleu4, double Zipf, double RepetitionRate,
    double MeanWords, double StdWords, double? EndedByItself, double StartsASentence, double FoundIn4Grams, double FoundIn8Grams, int LongestCopied,
    double? CategoryAgreement, double Topicality, RetrievalScore? NearestIsOwn);

/// <summary>The quality table: its rows ("real" first), how many papers the retrieval check ranks (0: no sample's title
/// is an eval paper of the reference), and why category agreement is missing, when it is.</summary>
public sealed record QualityTable(IReadOnlyList<QualityRow> Rows, int RetrievalPapers, string? CategoryNote);

/// <summary>
/// `Training -- quality`: the numbers the paper did not compute, for generated abstracts against real ones (the first
/// eval papers of a prepared data set) as the reference row: diversity (distinct-n, self-BLEU-4), Zipf coefficient and
/// repetition (Holtzman et al. 2019), length, how many ended by themselves, novelty against the training abstracts
/// (n-gram overlap, longest copied span), category accuracy by an ML.NET text classifier trained on the training split,
/// and topicality (title words the abstract uses).
/// </summary>
public static class QualityReport
{
    /// <summary>Builds the rows: "real" (eval papers) first, then each source of <paramref name="generated"/> in order.</summary>
    public static QualityTable Build(IReadOnlyList<Sample> generated, string dataDirectory, TextWriter log,
        int referencePapers = 1000, int classifierPapers = 20000, int seed = 1)
    {
        var real = Samples.ReadSplit(dataDirectory, "eval", referencePapers);
        var training = Samples.ReadSplit(dataDirectory, "train");
        log.WriteLine($"reference: {real.Count:N0} eval papers; training abstracts for novelty: {training.Count:N0}");
        var (grams4, grams8) = (new HashSet<ulong>(), new HashSet<ulong>());
        foreach (var words in training.Select(s => TextMeasures.Words(s.Text)))
            for (int i = 0; i + 4 <= words.Length; i++)
            {
                grams4.Add(TextMeasures.NGramHash(words, i, 4));
                if (i + 8 <= words.Length)
                    grams8.Add(TextMeasures.NGramHash(words, i, 8));
            }
        // A classifier needs two classes: a data set prepared with one category (prepare --categories cs.CL) has none
        // to tell apart, and the column says so instead of the report failing.
        var categories = training.Take(classifierPapers).Select(s => s.Category).Distinct().Order().ToList();
        string? categoryNote = categories.Count >= 2 ? null
            : $"category agreement: not measured, the training split holds {(categories.Count == 0 ? "no papers" : $"only {Text.PaperFormat.ArxivName(categories[0])}")} and a classifier needs at least two categories";
        var classifier = categoryNote is null ? CategoryClassifier.Train(training, classifierPapers, seed, log) : null;
        if (categoryNote is not null)
            log.WriteLine(categoryNote);
        var retrieval = AbstractRetrieval.Build(real, generated, seed);
        log.WriteLine(retrieval is null
            ? "nearest real abstract: not measured, no sample's title is one of the reference papers (Training -- titles writes them)"
            : $"nearest real abstract: ranking the {retrieval.Papers:N0} reference papers the samples' titles name");
        var groups = new[] { ("real", real) }.Concat(generated.GroupBy(s => s.Source).Select(g => (g.Key, (IReadOnlyList<Sample>)[.. g]))).ToList();
        // distinct-n, self-BLEU and the Zipf fit depend on how many texts they see: every row measures as many.
        int diversitySize = groups.Min(g => g.Item2.Count);
        return new QualityTable([.. groups.Select(group => Row(group.Item1, group.Item2, diversitySize, grams4, grams8, classifier, retrieval))],
            retrieval?.Papers ?? 0, categoryNote);
    }

    /// <summary>How many abstracts of each row the size-dependent measures (distinct-n, self-BLEU-4, Zipf) use: the
    /// smallest source's count, so that rows compare.</summary>
    public static int DiversitySize(IReadOnlyList<QualityRow> rows) => rows.Min(r => r.Samples);

    private static QualityRow Row(string source, IReadOnlyList<Sample> samples, int diversitySize, HashSet<ulong> grams4, HashSet<ulong> grams8, CategoryClassifier? classifier, AbstractRetrieval? retrieval)
    {
        var words = samples.Select(s => TextMeasures.Words(s.Text)).ToList();
        var first = words.Take(diversitySize).ToList();
        double mean = words.Average(w => (double)w.Length);
        double std = Math.Sqrt(words.Average(w => (w.Length - mean) * (w.Length - mean)));
        var (found4, total4, found8, total8, longest) = (0L, 0L, 0L, 0L, 0);
        foreach (var w in words)
        {
            int run = 0;
            for (int i = 0; i + 4 <= w.Length; i++)
            {
                total4++;
                if (grams4.Contains(TextMeasures.NGramHash(w, i, 4))) found4++;
                if (i + 8 > w.Length) continue;
                total8++;
                if (grams8.Contains(TextMeasures.NGramHash(w, i, 8)))
                {
                    found8++;
                    run++;
                    longest = Math.Max(longest, run + 7);
                }
                else
                {
                    run = 0;
                }
            }
        }
        double? agreement = classifier?.Predict(samples.Select(s => s.Text)) is { } predicted
            ? samples.Zip(predicted).Count(p => p.First.Category.ToString() == p.Second) / (double)samples.Count
            : null;
        double topicality = samples.Average(s =>
        {
            var title = TextMeasures.ContentWords(s.Title);
            return title.Count == 0 ? 0 : title.Count(TextMeasures.ContentWords(s.Text).Contains) / (double)title.Count;
        });
        double? ended = samples.All(s => s.EndedByItself is not null) ? samples.Count(s => s.EndedByItself == true) / (double)samples.Count : null;
        double starts = samples.Count(s => TextMeasures.StartsASentence(s.Text)) / (double)samples.Count;
        return new QualityRow(source, samples.Count, TextMeasures.Distinct(first, 1), TextMeasures.Distinct(first, 2), TextMeasures.Distinct(first, 3),
            TextMeasures.SelfBleu4(first), TextMeasures.Zipf(first), TextMeasures.RepetitionRate(words), mean, std, ended,
            starts, total4 == 0 ? 0 : (double)found4 / total4, total8 == 0 ? 0 : (double)found8 / total8, longest, agreement, topicality, retrieval?.Score(samples));
    }

    /// <summary>Writes quality.md and quality.json to <paramref name="directory"/>, each in one rename.</summary>
    public static void Write(QualityTable table, string directory, string description)
    {
        Directory.CreateDirectory(directory);
        AtomicWrite.Text(Path.Combine(directory, "quality.json"), JsonSerializer.Serialize(
            new { description, rows = table.Rows, retrieval_papers = table.RetrievalPapers, category_note = table.CategoryNote },
            new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        AtomicWrite.Text(Path.Combine(directory, "quality.md"), Markdown(table, description));
    }

    public static string Markdown(QualityTable table, string description)
    {
        var rows = table.Rows;
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(description).AppendLine();
        md.AppendLine("| source | n | distinct-1 / 2 / 3 | self-BLEU-4 | Zipf | repetition | words (sd) | ended by itself | starts a sentence | 4-grams / 8-grams in training | longest copied | category agreement | title words used | own paper nearest: top-1 / top-10 |");
        md.AppendLine("| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |");
        static string Percent(double x) => string.Create(CultureInfo.InvariantCulture, $"{100 * x:F0}%");
        foreach (var r in rows)
            md.AppendLine(string.Create(inv, $"| {r.Source} | {r.Samples} | {r.Distinct1:F3} / {r.Distinct2:F3} / {r.Distinct3:F3} | {r.SelfBleu4:F3} | {r.Zipf:F2} | {Percent(r.RepetitionRate)} | {r.MeanWords:F0} ({r.StdWords:F0}) | {(r.EndedByItself is { } e ? Percent(e) : "-")} | {Percent(r.StartsASentence)} | {Percent(r.FoundIn4Grams)} / {Percent(r.FoundIn8Grams)} | {r.LongestCopied} | {(r.CategoryAgreement is { } a ? Percent(a) : "-")} | {Percent(r.Topicality)} | {(r.NearestIsOwn is { } n ? $"{Percent(n.Top1)} / {Percent(n.Top10)} ({n.Queries})" : "-")} |"));
        md.AppendLine().AppendLine(string.Create(inv, $"distinct-n, self-BLEU-4 and Zipf are measured on the first {DiversitySize(rows)} abstracts of every row (they depend on how many texts they see). ") +
            "distinct-n: distinct word n-grams over all (higher: more diverse). self-BLEU-4: BLEU of each abstract against the others " +
            "(higher: more alike). Zipf: slope of word frequency against rank. repetition: abstracts with a 4-gram said three times. " +
            "starts a sentence: abstracts whose first character is not a lower-case letter (not begun mid-sentence). " +
            "longest copied: longest run of words whose every 8-gram is in some training abstract. category agreement: an ML.NET text " +
            "classifier trained on the training split; on the real row, its accuracy. title words used: share of the title's content words in the abstract. " +
            "own paper nearest: how often the real abstract most similar to the text (TF-IDF cosine) is its own paper's, and how often it is among the ten " +
            "most similar, over the abstracts (in brackets) whose title is a paper of the pool.");
        md.AppendLine().AppendLine(table.RetrievalPapers > 0
            ? string.Create(inv, $"The retrieval pool holds the {table.RetrievalPapers} reference papers whose titles the samples were written for: real abstracts against themselves are the ceiling, random pairing the floor ({Percent(1.0 / table.RetrievalPapers)} / {Percent(Math.Min(10, table.RetrievalPapers) / (double)table.RetrievalPapers)}).")
            : "own paper nearest: not measured, no sample's title is one of the reference papers (`Training -- titles` writes such titles).");
        if (table.CategoryNote is { } note)
            md.AppendLine().AppendLine(note + ".");
        return md.ToString();
    }
}

/// <summary>
/// Which category an abstract reads as: ML.NET's text featurizer (word unigrams and bigrams) and a maximum-entropy
/// classifier trained with SDCA on training abstracts. The reference row's agreement is its accuracy on held-out papers.
/// </summary>
public sealed class CategoryClassifier
{
    private readonly MLContext _ml;
    private readonly ITransformer _model;

    private CategoryClassifier(MLContext ml, ITransformer model) => (_ml, _model) = (ml, model);

    public static CategoryClassifier Train(IReadOnlyList<Sample> training, int limit, int seed, TextWriter log)
    {
        var ml = new MLContext(seed);
        var rows = training.Take(limit).Select(s => new Labelled { Text = s.Text, Label = s.Category.ToString() }).ToList();
        // Word unigrams and bigrams only: character n-grams (the featurizer's default) made training on 20,000 abstracts
        // take 6 minutes here, for little accuracy on text this long.
        var featurizer = new Microsoft.ML.Transforms.Text.TextFeaturizingEstimator.Options
        {
            WordFeatureExtractor = new Microsoft.ML.Transforms.Text.WordBagEstimator.Options { NgramLength = 2, UseAllLengths = true },
            CharFeatureExtractor = null,
        };
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.Text.FeaturizeText("Features", featurizer, nameof(Labelled.Text)))
            .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy(maximumNumberOfIterations: 20))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var model = pipeline.Fit(ml.Data.LoadFromEnumerable(rows));
        log.WriteLine($"category classifier: trained on {rows.Count:N0} training abstracts in {clock.Elapsed.TotalSeconds:F0} s");
        return new CategoryClassifier(ml, model);
    }

    /// <summary>The category each text reads as ("AI", "LG", "CL" or "CV").</summary>
    public IReadOnlyList<string> Predict(IEnumerable<string> texts)
    {
        var scored = _model.Transform(_ml.Data.LoadFromEnumerable(texts.Select(t => new Labelled { Text = t, Label = "" })));
        return [.. _ml.Data.CreateEnumerable<Predicted>(scored, reuseRowObject: false).Select(p => p.PredictedLabel)];
    }

    private sealed class Labelled
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    private sealed class Predicted
    {
        public string PredictedLabel { get; set; } = "";
    }
}
