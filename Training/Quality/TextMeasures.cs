using System.Text.RegularExpressions;

namespace OrleansGpt.Training.Quality;

/// <summary>
/// The measures of one set of abstracts that Holtzman et al. (2019, the nucleus-sampling paper) and the
/// text-generation literature report, on lower-cased word tokens (runs of letters and digits).
/// </summary>
public static partial class TextMeasures
{
    /// <summary>Lower-cased words of a text.</summary>
    public static string[] Words(string text) => [.. WordPattern().Matches(text.ToLowerInvariant()).Select(m => m.Value)];

    /// <summary>distinct-n (Li et al. 2016): distinct n-grams over all n-grams of the set; higher is more diverse.</summary>
    public static double Distinct(IReadOnlyList<string[]> texts, int n)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long total = 0;
        foreach (var words in texts)
            for (int i = 0; i + n <= words.Length; i++, total++)
                seen.Add(string.Join(' ', words, i, n));
        return total == 0 ? 0 : (double)seen.Count / total;
    }

    /// <summary>
    /// Self-BLEU-4 (Zhu et al. 2018, Texygen): each text's BLEU-4 against all the others as references, averaged; higher
    /// means the texts resemble each other more (less diverse). Over at most <paramref name="limit"/> texts (quadratic).
    /// Clipped n-gram precisions for n = 1..4, uniform weights, brevity penalty against the closest reference length,
    /// and add-one smoothing for n > 1 (Lin and Och 2004) so a short text without a 4-gram match is not scored 0.
    /// </summary>
    public static double SelfBleu4(IReadOnlyList<string[]> texts, int limit = 200)
    {
        var chosen = texts.Where(t => t.Length > 0).Take(limit).ToList();
        if (chosen.Count < 2)
            return 0;
        var counts = chosen.Select(t => Enumerable.Range(1, 4).Select(n => NGramCounts(t, n)).ToArray()).ToList();
        double sum = 0;
        for (int h = 0; h < chosen.Count; h++)
        {
            double logPrecision = 0;
            for (int n = 1; n <= 4; n++)
            {
                var hyp = counts[h][n - 1];
                long matched = 0, total = 0;
                foreach (var (gram, count) in hyp)
                {
                    total += count;
                    int most = 0;
                    for (int r = 0; r < chosen.Count; r++)
                        if (r != h && counts[r][n - 1].TryGetValue(gram, out int c) && c > most)
                            most = c;
                    matched += Math.Min(count, most);
                }
                double p = n == 1 ? (total == 0 ? 0 : (double)matched / total) : (matched + 1.0) / (total + 1.0);
                logPrecision += p > 0 ? Math.Log(p) / 4 : double.NegativeInfinity;
            }
            int length = chosen[h].Length;
            int closest = chosen.Where((_, r) => r != h).Select(t => t.Length).OrderBy(l => Math.Abs(l - length)).ThenBy(l => l).First();
            double brevity = length >= closest ? 1 : Math.Exp(1 - (double)closest / length);
            sum += brevity * (double.IsNegativeInfinity(logPrecision) ? 0 : Math.Exp(logPrecision));
        }
        return sum / chosen.Count;
    }

    /// <summary>
    /// The Zipf coefficient s of the set's word frequencies, f(rank) ~ rank^-s, as the negative slope of a least-squares
    /// line through (log rank, log frequency) over the <paramref name="ranks"/> most frequent words (Holtzman et al.
    /// report ~0.93 for human text, and higher, flatter vocabularies for greedy and beam search).
    /// </summary>
    public static double Zipf(IReadOnlyList<string[]> texts, int ranks = 5000)
    {
        var frequencies = texts.SelectMany(t => t).GroupBy(w => w, StringComparer.Ordinal).Select(g => (double)g.Count())
            .OrderDescending().Take(ranks).ToArray();
        if (frequencies.Length < 2)
            return 0;
        double[] x = [.. Enumerable.Range(1, frequencies.Length).Select(r => Math.Log(r))];
        double[] y = [.. frequencies.Select(f => Math.Log(f))];
        double mx = x.Average(), my = y.Average();
        double slope = x.Zip(y).Sum(p => (p.First - mx) * (p.Second - my)) / x.Sum(v => (v - mx) * (v - mx));
        return -slope;
    }

    /// <summary>Share of texts caught in a loop: some word 4-gram occurs three or more times (Holtzman et al. count
    /// generations that end repeating a phrase; this counts a phrase repeated anywhere, which also catches loops cut
    /// at the token limit).</summary>
    public static double RepetitionRate(IReadOnlyList<string[]> texts) =>
        texts.Count == 0 ? 0 : texts.Count(t => NGramCounts(t, 4).Values.Any(c => c >= 3)) / (double)texts.Count;

    /// <summary>Whether a text opens as an abstract does, not in the middle of a sentence: its first character is not a
    /// lower-case letter. A model that learned abstracts' tails after its prompt (a title repeated at the head of every
    /// training block) starts lower-case, and neither perplexity nor the title gain sees it.</summary>
    public static bool StartsASentence(string text)
    {
        string trimmed = text.TrimStart();
        return trimmed.Length > 0 && !char.IsLower(trimmed[0]);
    }

    /// <summary>Counts of each n-gram of <paramref name="words"/>.</summary>
    public static Dictionary<string, int> NGramCounts(string[] words, int n)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + n <= words.Length; i++)
        {
            string gram = string.Join(' ', words, i, n);
            counts[gram] = counts.GetValueOrDefault(gram) + 1;
        }
        return counts;
    }

    /// <summary>A 64-bit hash of words[i .. i + n) (FNV-1a over the words): n-gram sets of a whole training split fit
    /// in memory as these.</summary>
    public static ulong NGramHash(string[] words, int i, int n)
    {
        ulong h = 14695981039346656037UL;
        for (int k = i; k < i + n; k++)
        {
            foreach (char c in words[k])
                h = (h ^ c) * 1099511628211UL;
            h = (h ^ ' ') * 1099511628211UL;
        }
        return h;
    }

    /// <summary>Content words: words of three or more characters that are not function words.</summary>
    public static HashSet<string> ContentWords(string text) =>
        [.. Words(text).Where(w => w.Length >= 3 && !s_stopWords.Contains(w))];

    private static readonly HashSet<string> s_stopWords = new(StringComparer.Ordinal)
    {
        "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "her", "was", "one", "our", "out", "has", "had", "his",
        "how", "its", "may", "new", "now", "see", "two", "who", "did", "get", "let", "use", "via", "with", "from", "that", "this",
        "these", "those", "than", "then", "they", "them", "their", "there", "into", "onto", "over", "under", "using", "based", "which",
        "while", "where", "when", "what", "also", "such", "each", "more", "most", "some", "both", "only", "other", "been", "being",
        "have", "were", "will", "would", "could", "should", "through", "between", "towards", "toward", "about", "after", "before",
        "without", "within", "upon", "does", "we", "show", "paper", "propose", "proposed", "approach", "method", "results",
    };

    [GeneratedRegex(@"[\p{L}\p{N}]+")]
    private static partial Regex WordPattern();
}
