using OrleansGpt.Training.Generation;

namespace OrleansGpt.Tests.Generation;

public sealed class SamplerTests
{
    private static readonly float[] s_paperExample = Logits(0.5, 0.3, 0.15, 0.03, 0.02);

    [Fact]
    public void TopPKeepsTheSmallestSetReachingPRenormalised()
    {
        var (probs, ids) = TokenSampler.Candidates(s_paperExample, new SamplingSettings { TopP = 0.9 });
        Assert.Equal([0, 1, 2], ids);
        Assert.Equal(0.526, probs[0], 3);
        Assert.Equal(0.316, probs[1], 3);
        Assert.Equal(0.158, probs[2], 3);
    }

    [Fact]
    public void LogitBiasBansWithMinus100AndShiftsOtherwise()
    {
        // The paper's example with token 0 banned: the rest renormalise to 0.6, 0.3, 0.06, 0.04, and top-p 0.95 keeps 1, 2 and 3.
        var banned = new SamplingSettings { TopP = 0.95, LogitBias = new Dictionary<int, double> { [0] = -100 } };
        var (probs, ids) = TokenSampler.Candidates(s_paperExample, banned);
        Assert.DoesNotContain(0, ids);
        Assert.Equal([1, 2, 3], ids);
        Assert.Equal(0.3 / 0.48, probs[0], 3);
        // Greedy follows the bias too; a bias that is not a ban only shifts the logit.
        Assert.Equal(1, new TokenSampler(SamplingSettings.Greedy with { LogitBias = banned.LogitBias }).Next(s_paperExample));
        var nudged = new Dictionary<int, double> { [4] = Math.Log(0.5 / 0.02) + 0.01 };
        Assert.Equal(4, new TokenSampler(SamplingSettings.Greedy with { LogitBias = nudged }).Next(s_paperExample));
        Assert.Equal(0, new TokenSampler(SamplingSettings.Greedy with { LogitBias = new Dictionary<int, double> { [4] = Math.Log(0.5 / 0.02) - 0.01 } }).Next(s_paperExample));
        // Out of range: refused with the setting's name.
        Assert.Equal("LogitBias", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingSettings { LogitBias = new Dictionary<int, double> { [1] = 101 } }.Validate()).ParamName);
        Assert.Equal("LogitBias", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingSettings { LogitBias = new Dictionary<int, double> { [-1] = 1 } }.Validate()).ParamName);
    }

    [Fact]
    public void TopPOfOneKeepsEveryToken()
    {
        var (probs, ids) = TokenSampler.Candidates(s_paperExample, new SamplingSettings { TopP = 1 });
        Assert.Equal([0, 1, 2, 3, 4], ids);
        Assert.Equal(1.0, probs.Sum(), 5);
    }

    [Fact]
    public void ATinyTopPKeepsOnlyTheMostLikelyToken()
    {
        var (probs, ids) = TokenSampler.Candidates(Logits(0.1, 0.2, 0.6, 0.1), new SamplingSettings { TopP = 1e-6 });
        Assert.Equal([2], ids);
        Assert.Equal([1f], probs);
    }

    [Fact]
    public void DrawsFollowTheRenormalisedNucleus()
    {
        // Chi-square goodness of fit, 2 degrees of freedom: 13.8 is the 0.001 critical value. A sampler that
        // ignored the renormalisation, leaked tokens 3 and 4, or skewed draws fails this.
        var sampler = new TokenSampler(new SamplingSettings { TopP = 0.9, Seed = 12345 });
        const int draws = 30_000;
        var counts = new int[5];
        for (int i = 0; i < draws; i++) counts[sampler.Next(s_paperExample)]++;
        Assert.Equal(0, counts[3] + counts[4]);
        double[] expected = [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95];
        double chi2 = Enumerable.Range(0, 3).Sum(i => Math.Pow(counts[i] - draws * expected[i], 2) / (draws * expected[i]));
        Assert.True(chi2 < 13.8, $"chi-square {chi2:F2} for counts {string.Join(", ", counts)}");
    }

    [Fact]
    public void DrawsOverANucleusOfThousandsOfTokensFollowTheirProbabilities()
    {
        // 3,000 tokens kept (top-p 1), in 6 groups of 500 whose probabilities differ: the draw skips whole blocks of
        // 512 by their sums, so a group straddles a block edge. Chi-square, 5 degrees of freedom: 20.5 is the 0.001
        // critical value; a block skipped without counting its mass, or walked from the wrong place, fails this.
        const int tokens = 3_000, group = 500, draws = 60_000;
        var logits = new float[tokens];
        for (int i = 0; i < tokens; i++) logits[i] = MathF.Log(1 + i / group); // group g has weight g + 1
        var sampler = new TokenSampler(new SamplingSettings { TopP = 1, Seed = 99 });
        var counts = new int[tokens / group];
        for (int i = 0; i < draws; i++) counts[sampler.Next(logits) / group]++;
        double total = Enumerable.Range(1, tokens / group).Sum();
        double chi2 = Enumerable.Range(0, tokens / group).Sum(g => Math.Pow(counts[g] - draws * (g + 1) / total, 2) / (draws * (g + 1) / total));
        Assert.True(chi2 < 20.5, $"chi-square {chi2:F2} for counts {string.Join(", ", counts)}");
    }

    [Theory]
    [InlineData(0.9, 1.0, 0, 1)]
    [InlineData(0.5, 1.0, 0, 2)]
    [InlineData(0.95, 0.7, 0, 3)]
    [InlineData(0.9, 1.3, 500, 4)]
    [InlineData(0.99, 1.0, 0, 5)]
    public void TheNucleusOverAFullVocabularyMatchesASortingReference(double topP, double temperature, int topK, int seed)
    {
        // A realistic vocabulary: 50258 logits with a long tail, rounded to bf16 precision so many tie.
        var random = new Random(seed);
        var logits = new float[50258];
        for (int i = 0; i < logits.Length; i++)
            logits[i] = RoundToBf16((float)(random.NextDouble() < 0.001 ? 8 + 4 * random.NextDouble() : 3 * Normal(random)));
        var settings = new SamplingSettings { TopP = topP, Temperature = temperature, TopK = topK };

        var (probs, ids) = TokenSampler.Candidates(logits, settings);

        // Check the definition against exact (double) probabilities of the tempered, top-k-filtered logits:
        // the kept set holds the most likely tokens, reaches p, and is the smallest that does. The float
        // arithmetic of the sampler may land one token either side only where the sum is within 1e-5 of p.
        var exact = Reference(logits, settings);
        var kept = ids.ToHashSet();
        double mass = ids.Sum(i => exact[i]);
        double smallestKept = ids.Min(i => exact[i]);
        double largestLeft = exact.Where((_, i) => !kept.Contains(i)).DefaultIfEmpty(0).Max();
        Assert.True(smallestKept >= largestLeft, $"kept {smallestKept} while {largestLeft} was left out");
        Assert.True(mass >= topP - 1e-5, $"the nucleus holds {mass}, less than p = {topP}");
        Assert.True(mass - smallestKept < topP + 1e-5, $"the nucleus without its smallest token still holds {mass - smallestKept} >= p");
        for (int i = 0; i < ids.Length; i++)
            Assert.Equal(exact[ids[i]] / mass, probs[i], 5);
    }

    [Fact]
    public void TemperatureComesBeforeTopKAndTopP()
    {
        var logits = Logits(0.5, 0.3, 0.15, 0.03, 0.02);
        // A high temperature flattens the distribution, so more tokens are needed to reach p.
        Assert.Equal(3, TokenSampler.Candidates(logits, new SamplingSettings { TopP = 0.9, Temperature = 1 }).Ids.Length);
        Assert.Equal(4, TokenSampler.Candidates(logits, new SamplingSettings { TopP = 0.9, Temperature = 2 }).Ids.Length);
        // top-k cuts first, then top-p renormalises over what is left: within the top 2, p = 0.6 keeps only one.
        var (probs, ids) = TokenSampler.Candidates(logits, new SamplingSettings { TopK = 2, TopP = 0.6 });
        Assert.Equal([0], ids);
        Assert.Equal([1f], probs);
        Assert.Equal([0, 1], TokenSampler.Candidates(logits, new SamplingSettings { TopK = 2 }).Ids);
    }

    [Fact]
    public void GreedyTakesTheArgmax()
    {
        var sampler = new TokenSampler(SamplingSettings.Greedy);
        Assert.Equal(2, sampler.Next(Logits(0.1, 0.2, 0.6, 0.1)));
        Assert.Equal(2, new TokenSampler(new SamplingSettings { TopK = 1, Seed = 3 }).Next(Logits(0.1, 0.2, 0.6, 0.1)));
    }

    [Fact]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfSeenTokens()
    {
        float[] logits = [2f, 1.5f, -1f, -1f];
        var settings = new SamplingSettings { RepetitionPenalty = 2, Temperature = 0 };
        Assert.Equal([0], TokenSampler.Candidates(logits, settings).Ids);
        Assert.Equal([1], TokenSampler.Candidates(logits, settings, [0]).Ids); // 2 / 2 = 1 < 1.5
        var (probs, _) = TokenSampler.Candidates(logits, settings with { Temperature = 1 }, [0, 2]);
        var expected = Softmax([1f, 1.5f, -2f, -1f]).OrderDescending().ToArray();
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], probs[i], 5);
    }

    [Fact]
    public void ASeededSamplerRepeatsItselfAndDifferentSeedsDiffer()
    {
        var logits = Logits(Enumerable.Range(0, 100).Select(i => 1.0 + i % 7).ToArray());
        int[] Run(long seed)
        {
            var s = new TokenSampler(new SamplingSettings { TopP = 0.95, Seed = seed });
            return [.. Enumerable.Range(0, 50).Select(_ => s.Next(logits))];
        }
        Assert.Equal(Run(7), Run(7));
        Assert.NotEqual(Run(7), Run(8));
        Assert.NotEqual(0, new TokenSampler(new SamplingSettings()).Seed + new TokenSampler(new SamplingSettings()).Seed);
    }

    [Theory]
    [InlineData(0.0, 1.0, 0, 1.0, 10)]
    [InlineData(1.5, 1.0, 0, 1.0, 10)]
    [InlineData(0.9, -1.0, 0, 1.0, 10)]
    [InlineData(0.9, 1.0, -1, 1.0, 10)]
    [InlineData(0.9, 1.0, 0, 0.0, 10)]
    [InlineData(0.9, 1.0, 0, 1.0, 0)]
    public void OutOfRangeSettingsAreRejected(double topP, double temperature, int topK, double penalty, int maxTokens) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingSettings
        {
            TopP = topP, Temperature = temperature, TopK = topK, RepetitionPenalty = penalty, MaxNewTokens = maxTokens,
        }.Validate());

    private static float[] Logits(params double[] probs) => [.. probs.Select(p => (float)Math.Log(p))];

    private static double[] Softmax(float[] x)
    {
        double max = x.Max();
        var e = x.Select(v => Math.Exp(v - max)).ToArray();
        return [.. e.Select(v => v / e.Sum())];
    }

    /// <summary>Exact probabilities after temperature and top-k (0 for tokens top-k removes).</summary>
    private static double[] Reference(float[] logits, SamplingSettings s)
    {
        var allowed = s.TopK > 0
            ? Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).Take(s.TopK).ToHashSet()
            : Enumerable.Range(0, logits.Length).ToHashSet();
        double max = logits.Max();
        var e = logits.Select((x, i) => allowed.Contains(i) ? Math.Exp((x - max) / s.Temperature) : 0).ToArray();
        double total = e.Sum();
        return [.. e.Select(v => v / total)];
    }

    private static float RoundToBf16(float x) => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(x) & unchecked((int)0xFFFF0000));

    private static double Normal(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());
}
