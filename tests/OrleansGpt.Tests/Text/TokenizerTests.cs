using OrleansGpt.Training.Text;

namespace OrleansGpt.Tests.Text;

public sealed class TokenizerTests
{
    private static readonly Gpt2Tokenizer s_tokenizer = Gpt2Tokenizer.Shared;

    [Theory]
    [InlineData("Hello world", new[] { 15496, 995 })]
    [InlineData("hello world", new[] { 31373, 995 })]
    [InlineData(" ", new[] { 220 })]
    [InlineData("indivisible", new[] { 521, 452, 12843 })]
    [InlineData("hello 👋 world 🌍", new[] { 31373, 50169, 233, 995, 12520, 234, 235 })]
    [InlineData("0000000", new[] { 24598 })]
    public void EncodesGpt2sKnownVectors(string text, int[] expected) => Assert.Equal(expected, s_tokenizer.Encode(text));

    [Theory]
    [InlineData("Attention Is All You Need")]
    [InlineData("  spaces\tand\nnewlines  ")]
    [InlineData("naïve Bayes, Schrödinger's cat, 東京, ∑ᵢ xᵢ² 🤖")]
    public void DecodeInvertsEncode(string text) => Assert.Equal(text, s_tokenizer.Decode(s_tokenizer.Encode(text)));

    [Fact]
    public void SpecialTokenTextTypedByAUserStaysText()
    {
        int[] ids = s_tokenizer.Encode("A <|sep|> B <|endoftext|> C");
        Assert.DoesNotContain(Gpt2Tokenizer.Separator, ids);
        Assert.DoesNotContain(Gpt2Tokenizer.EndOfText, ids);
        Assert.Equal("A <|sep|> B <|endoftext|> C", s_tokenizer.Decode(ids));
    }

    [Fact]
    public void AFormattedExampleHasSpecialIdsExactlyWhereExpected()
    {
        int[] title = s_tokenizer.Encode("<|CL|> Neural Machine Translation");
        int[] abstractIds = s_tokenizer.Encode(" We translate <|sep|> text.");
        int[] example = PaperFormat.EncodeExample(s_tokenizer, ArxivCategory.CL, "Neural  Machine\nTranslation", "We translate <|sep|> text.");

        Assert.Equal([.. title, Gpt2Tokenizer.Separator, .. abstractIds, Gpt2Tokenizer.EndOfText], example);
        Assert.Equal([title.Length], Indexes(example, Gpt2Tokenizer.Separator));
        Assert.Equal([example.Length - 1], Indexes(example, Gpt2Tokenizer.EndOfText));
        Assert.Equal("<|CL|> Neural Machine Translation<|sep|> We translate <|sep|> text.<|endoftext|>", s_tokenizer.Decode(example));

        // The category tag is ordinary text that BPE splits, not a token of its own.
        Assert.True(s_tokenizer.Encode("<|CL|>").Length > 1);
        // The prompt is the example up to and including <|sep|>.
        Assert.Equal(example[..(title.Length + 1)], PaperFormat.EncodePrompt(s_tokenizer, ArxivCategory.CL, "Neural Machine Translation"));
    }

    [Theory]
    [InlineData("CL", ArxivCategory.CL)]
    [InlineData("cs.CV", ArxivCategory.CV)]
    [InlineData("<|lg|>", ArxivCategory.LG)]
    [InlineData(" ai ", ArxivCategory.AI)]
    public void CategoriesParseInTheirUsualSpellings(string text, ArxivCategory expected) => Assert.Equal(expected, PaperFormat.ParseCategory(text));

    [Theory]
    [InlineData("cs.RO")]
    [InlineData("7")]
    [InlineData("")]
    public void UnknownCategoriesAreRejected(string text) => Assert.Throws<ArgumentOutOfRangeException>(() => PaperFormat.ParseCategory(text));

    [Fact]
    public void AnEmptyTitleIsRejected() => Assert.Throws<ArgumentException>(() => PaperFormat.EncodePrompt(s_tokenizer, ArxivCategory.AI, " \n "));

    [Fact]
    public void StreamingDecodeHoldsBackPartialCharacters()
    {
        // " 👋" is two tokens: 50169 holds the space and the emoji's first three bytes, 233 its last byte.
        var decoder = s_tokenizer.NewStreamingDecoder();
        Assert.Equal("hello", decoder.Push(31373));
        Assert.Equal(" ", decoder.Push(50169));
        Assert.Equal("👋", decoder.Push(233));
        Assert.Equal(" world", decoder.Push(995));
        Assert.Equal("", decoder.Flush());
    }

    [Fact]
    public void StreamingDecodeOfAnyTextConcatenatesToTheWholeAndNeverSplitsACharacter()
    {
        string text = "Über 🌍 ∑ 東京 — emoji 🤖🧠 mixed with ASCII and ñ.";
        var decoder = s_tokenizer.NewStreamingDecoder();
        var pieces = s_tokenizer.Encode(text).Select(decoder.Push).Append(decoder.Flush()).ToList();
        Assert.Equal(text, string.Concat(pieces));
        Assert.All(pieces, p => Assert.DoesNotContain('\uFFFD', p));
        Assert.All(pieces, p => Assert.False(p.Length > 0 && char.IsHighSurrogate(p[^1]), $"'{p}' ends inside a surrogate pair"));
    }

    [Fact]
    public void FlushTurnsAnUnfinishedCharacterIntoAReplacementCharacter()
    {
        var decoder = s_tokenizer.NewStreamingDecoder();
        Assert.Equal(" ", decoder.Push(50169));
        Assert.Equal("\uFFFD", decoder.Flush());
    }

    [Fact]
    public void SpecialIdsDecodeToTheirNamesAndOutOfRangeIdsAreRejected()
    {
        Assert.Equal("<|endoftext|><|sep|>", s_tokenizer.Decode([50256, 50257]));
        Assert.Throws<ArgumentOutOfRangeException>(() => s_tokenizer.Decode([50258]));
        Assert.Throws<ArgumentOutOfRangeException>(() => s_tokenizer.Decode([-1]));
    }

    private static int[] Indexes(int[] ids, int id) => [.. ids.Select((x, i) => (x, i)).Where(p => p.x == id).Select(p => p.i)];
}
