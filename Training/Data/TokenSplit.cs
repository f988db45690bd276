using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Training.Data;

/// <summary>Where one example lies in a split's token file.</summary>
/// <param name="Offset">Index of its first token.</param>
/// <param name="Length">Its tokens, &lt;|endoftext|&gt; included.</param>
/// <param name="Category">Its arXiv category.</param>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public readonly record struct ExampleSpan(long Offset, int Length, ArxivCategory Category);

/// <summary>
/// One split of a prepared data directory: <c>{split}.tokens</c>, every example's tokens back to back as
/// little-endian uint16 (GPT-2's 50258 ids fit), and <c>{split}.examples</c>, one 16-byte
/// <see cref="ExampleSpan"/> per example (int64 offset, int32 length, int32 category). The token file is
/// memory-mapped, so a split of any size costs no managed memory.
/// </summary>
public sealed unsafe class TokenSplit : IDisposable
{
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly ushort* _tokens;

    private TokenSplit(string directory, string split)
    {
        Name = split;
        string tokensPath = TokensPath(directory, split);
        string examplesPath = ExamplesPath(directory, split);
        if (!File.Exists(tokensPath) || !File.Exists(examplesPath))
            throw new FileNotFoundException($"{directory} has no prepared '{split}' split ({Path.GetFileName(tokensPath)}, {Path.GetFileName(examplesPath)}); run the prepare command first", tokensPath);
        long bytes = new FileInfo(tokensPath).Length;
        if (bytes % 2 != 0)
            throw new InvalidDataException($"{tokensPath} has an odd number of bytes; it is not a uint16 token file");
        TokenCount = bytes / 2;
        Examples = MemoryMarshal.Cast<byte, ExampleSpan>(File.ReadAllBytes(examplesPath)).ToArray();
        long expected = Examples.Sum(e => (long)e.Length);
        if (expected != TokenCount)
            throw new InvalidDataException($"{examplesPath} describes {expected} tokens but {tokensPath} holds {TokenCount}");
        if (TokenCount > 0)
        {
            _file = MemoryMappedFile.CreateFromFile(tokensPath, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _file.CreateViewAccessor(0, bytes, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            _tokens = (ushort*)(pointer + _view.PointerOffset);
        }
    }

    /// <summary>"train" or "eval".</summary>
    public string Name { get; }

    /// <summary>Tokens in the split.</summary>
    public long TokenCount { get; }

    /// <summary>Every example, in file order.</summary>
    public IReadOnlyList<ExampleSpan> Examples { get; }

    /// <summary>Opens <c>{directory}/{split}.tokens</c> and its example index.</summary>
    public static TokenSplit Open(string directory, string split) => new(directory, split);

    /// <summary>Tokens [offset, offset + count).</summary>
    public ReadOnlySpan<ushort> Slice(long offset, int count)
    {
        if (offset < 0 || count < 0 || offset + count > TokenCount)
            throw new ArgumentOutOfRangeException(nameof(offset), $"tokens [{offset}, {offset + count}) are outside the split's {TokenCount}");
        return new ReadOnlySpan<ushort>(_tokens + offset, count);
    }

    /// <summary>The path of a split's token file.</summary>
    public static string TokensPath(string directory, string split) => Path.Combine(directory, $"{split}.tokens");

    /// <summary>The path of a split's example index.</summary>
    public static string ExamplesPath(string directory, string split) => Path.Combine(directory, $"{split}.examples");

    /// <summary>Writes a split: the examples' tokens back to back, and their index.</summary>
    public static void Write(string directory, string split, IReadOnlyList<(ArxivCategory Category, int[] Tokens)> examples)
    {
        using (var tokens = new BinaryWriter(new FileStream(TokensPath(directory, split), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20)))
        using (var index = new BinaryWriter(new FileStream(ExamplesPath(directory, split), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16)))
        {
            long offset = 0;
            foreach (var (category, ids) in examples)
            {
                foreach (int id in ids)
                {
                    if ((uint)id >= Gpt2Tokenizer.VocabSize)
                        throw new ArgumentOutOfRangeException(nameof(examples), id, "token id outside the vocabulary");
                    tokens.Write((ushort)id);
                }
                index.Write(offset);
                index.Write(ids.Length);
                index.Write((int)category);
                offset += ids.Length;
            }
        }
    }

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _file?.Dispose();
    }
}
