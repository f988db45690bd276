using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Text;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Training.Quality;

/// <summary>How often an abstract's nearest real abstract is its own paper's, over a pool of papers.</summary>
/// <param name="Queries">Abstracts whose title names a paper of the pool (only these are ranked).</param>
/// <param name="Top1">Share of those whose most similar real abstract is their own paper's.</param>
/// <param name="Top10">Share whose own paper is among the ten most similar.</param>
public sealed record RetrievalScore(int Queries, double Top1, double Top10);

/// <summary>
/// A topicality check that does not count title words: each abstract is embedded as a bag of words weighted by TF-IDF
/// (ML.NET's text featurizer, English stop words removed, IDF fitted on the pool's real abstracts, L2-normalised), and
/// the real abstracts of the pool are ranked by cosine similarity to it. An abstract about its own paper finds that
/// paper's abstract among the nearest; one that only reads like its category does not. The pool is the eval papers whose
/// titles the generated samples were written for, so every row of the table ranks against the same papers; real
/// abstracts against themselves are the ceiling and random pairing (1 / pool, 10 / pool) the floor.
/// </summary>
public sealed class AbstractRetrieval
{
    private readonly MLContext _ml;
    private readonly ITransformer _featurizer;
    private readonly float[][] _pool;                        // (papers, vocabulary), each row of unit length
    private readonly Dictionary<string, int> _paperByTitle;  // normalised title -> row of the pool

    private AbstractRetrieval(MLContext ml, ITransformer featurizer, float[][] pool, Dictionary<string, int> paperByTitle) =>
        (_ml, _featurizer, _pool, _paperByTitle) = (ml, featurizer, pool, paperByTitle);

    /// <summary>Papers in the pool.</summary>
    public int Papers => _pool.Length;

    /// <summary>The pool: those of <paramref name="real"/> whose titles some of <paramref name="generated"/> were written
    /// for (the first paper of a title, should two share one); null when none is.</summary>
    public static AbstractRetrieval? Build(IReadOnlyList<Sample> real, IEnumerable<Sample> generated, int seed)
    {
        var wanted = generated.Select(s => Key(s.Title)).ToHashSet(StringComparer.Ordinal);
        var papers = real.Where(s => wanted.Contains(Key(s.Title))).DistinctBy(s => Key(s.Title)).ToList();
        if (papers.Count == 0)
            return null;
        var ml = new MLContext(seed);
        var options = new TextFeaturizingEstimator.Options
        {
            WordFeatureExtractor = new WordBagEstimator.Options { NgramLength = 1, UseAllLengths = true, Weighting = NgramExtractingEstimator.WeightingCriteria.TfIdf },
            CharFeatureExtractor = null,
            StopWordsRemoverOptions = new StopWordsRemovingEstimator.Options { Language = TextFeaturizingEstimator.Language.English },
            Norm = TextFeaturizingEstimator.NormFunction.L2,
        };
        var featurizer = ml.Transforms.Text.FeaturizeText("Features", options, nameof(Document.Text))
            .Fit(ml.Data.LoadFromEnumerable(papers.Select(p => new Document { Text = p.Text })));
        return new AbstractRetrieval(ml, featurizer, Embed(ml, featurizer, papers.Select(p => p.Text)),
            papers.Select((p, i) => (Key(p.Title), i)).ToDictionary(x => x.Item1, x => x.i, StringComparer.Ordinal));
    }

    /// <summary>Ranks the pool for each sample whose title names a paper of it; samples for other titles are skipped.
    /// Null when no sample names one.</summary>
    public RetrievalScore? Score(IReadOnlyList<Sample> samples)
    {
        var queries = samples.Where(s => _paperByTitle.ContainsKey(Key(s.Title))).ToList();
        if (queries.Count == 0)
            return null;
        var vectors = Embed(_ml, _featurizer, queries.Select(q => q.Text));
        int top1 = 0, top10 = 0;
        for (int q = 0; q < queries.Count; q++)
        {
            int own = _paperByTitle[Key(queries[q].Title)];
            double ownSimilarity = Dot(vectors[q], _pool[own]);
            // The own paper's rank counts every other paper at least as similar: ties go against it, so an abstract
            // with no word of the pool's vocabulary (similar to nothing) finds nothing.
            int better = 0;
            for (int p = 0; p < _pool.Length; p++)
                if (p != own && Dot(vectors[q], _pool[p]) >= ownSimilarity)
                    better++;
            if (better == 0) top1++;
            if (better < 10) top10++;
        }
        return new RetrievalScore(queries.Count, top1 / (double)queries.Count, top10 / (double)queries.Count);
    }

    private static float[][] Embed(MLContext ml, ITransformer featurizer, IEnumerable<string> texts)
    {
        var transformed = featurizer.Transform(ml.Data.LoadFromEnumerable(texts.Select(t => new Document { Text = t })));
        return [.. transformed.GetColumn<VBuffer<float>>("Features").Select(v => v.DenseValues().ToArray())];
    }

    private static double Dot(float[] a, float[] b) => System.Numerics.Tensors.TensorPrimitives.Dot(a, b);

    private static string Key(string title) => PaperFormat.NormalizeWhitespace(title).ToLowerInvariant();

    private sealed class Document
    {
        public string Text { get; set; } = "";
    }
}
