using System.Text.RegularExpressions;

namespace OrleansGpt.Training.Text;

/// <summary>The four arXiv categories the paper fine-tunes on.</summary>
public enum ArxivCategory
{
    /// <summary>cs.AI, Artificial Intelligence.</summary>
    AI,

    /// <summary>cs.LG, Machine Learning.</summary>
    LG,

    /// <summary>cs.CL, Computation and Language.</summary>
    CL,

    /// <summary>cs.CV, Computer Vision and Pattern Recognition.</summary>
    CV,
}

/// <summary>
/// The paper's example format, <c>&lt;|CL|&gt; Title &lt;|sep|&gt; Abstract &lt;|endoftext|&gt;</c>, as token ids.
/// </summary>
/// <remarks>
/// The category tag is plain text that BPE splits (it is not a special token). The spaces written around
/// the special tokens belong to the text beside them: the title is encoded as "&lt;|CL|&gt; Title" and the
/// abstract as " Abstract" (GPT-2 words carry their leading space), so no token is spent on a lone space
/// before &lt;|sep|&gt; or &lt;|endoftext|&gt;. Training examples and generation prompts share this one encoding.
/// </remarks>
public static partial class PaperFormat
{
    /// <summary>Parses "CL", "cs.CL" or "&lt;|CL|&gt;" (any case).</summary>
    public static ArxivCategory ParseCategory(string text)
    {
        string t = text.Trim();
        if (t.StartsWith("<|", StringComparison.Ordinal) && t.EndsWith("|>", StringComparison.Ordinal)) t = t[2..^2];
        if (t.StartsWith("cs.", StringComparison.OrdinalIgnoreCase)) t = t[3..];
        return Enum.TryParse<ArxivCategory>(t, ignoreCase: true, out var c) && Enum.IsDefined(c)
            ? c
            : throw new ArgumentOutOfRangeException(nameof(text), text, "Unknown category; expected one of AI, LG, CL, CV (or cs.AI, ...)");
    }

    /// <summary>The text tag, e.g. "&lt;|CL|&gt;".</summary>
    public static string Tag(ArxivCategory category) => $"<|{category}|>";

    /// <summary>The arXiv name, e.g. "cs.CL".</summary>
    public static string ArxivName(ArxivCategory category) => $"cs.{category}";

    /// <summary>Collapses runs of whitespace (arXiv titles and abstracts carry line breaks) into single spaces.</summary>
    public static string NormalizeWhitespace(string text) => Whitespace().Replace(text, " ").Trim();

    /// <summary>The title and abstract of one prepared example, <c>&lt;|CAT|&gt; Title &lt;|sep|&gt; Abstract &lt;|endoftext|&gt;</c>
    /// as token ids (the inverse of <see cref="EncodeExample"/>, whitespace aside).</summary>
    public static (string Title, string Abstract) DecodeExample(ReadOnlySpan<ushort> example, ArxivCategory category)
    {
        int[] tokens = new int[example.Length];
        for (int i = 0; i < tokens.Length; i++) tokens[i] = example[i];
        int sep = Array.IndexOf(tokens, Gpt2Tokenizer.Separator);
        int end = Array.IndexOf(tokens, Gpt2Tokenizer.EndOfText);
        if (sep < 0)
            throw new InvalidDataException("A prepared example has no <|sep|> between title and abstract");
        string prompt = Gpt2Tokenizer.Shared.Decode(tokens[..sep]);
        string tag = Tag(category);
        string title = (prompt.StartsWith(tag, StringComparison.Ordinal) ? prompt[tag.Length..] : prompt).Trim();
        return (title, Gpt2Tokenizer.Shared.Decode(tokens[(sep + 1)..(end < 0 ? tokens.Length : end)]).Trim());
    }

    /// <summary>The generation prompt <c>&lt;|CAT|&gt; Title &lt;|sep|&gt;</c>.</summary>
    /// <param name="maxTokens">When given, a title too long to fit is refused before it is tokenised.</param>
    public static int[] EncodePrompt(Gpt2Tokenizer tokenizer, ArxivCategory category, string title, int? maxTokens = null)
    {
        string clean = NormalizeWhitespace(title);
        if (clean.Length == 0)
            throw new ArgumentException("The title is empty", nameof(title));
        string text = $"{Tag(category)} {clean}";
        return [.. maxTokens is int limit ? tokenizer.Encode(text, limit, nameof(title)) : tokenizer.Encode(text), Gpt2Tokenizer.Separator];
    }

    /// <summary>A whole training example: prompt, " Abstract", &lt;|endoftext|&gt;.</summary>
    public static int[] EncodeExample(Gpt2Tokenizer tokenizer, ArxivCategory category, string title, string abstractText)
    {
        string clean = NormalizeWhitespace(abstractText);
        if (clean.Length == 0)
            throw new ArgumentException("The abstract is empty", nameof(abstractText));
        return [.. EncodePrompt(tokenizer, category, title), .. tokenizer.Encode(" " + clean), Gpt2Tokenizer.EndOfText];
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}
