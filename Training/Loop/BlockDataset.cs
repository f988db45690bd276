using OrleansGpt.Training.Data;
using OrleansGpt.Training.Numerics;
using OrleansGpt.Training.Text;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Loop;

/// <summary>
/// Training blocks as Hugging Face's run_clm makes them: the split's examples (each ending in &lt;|endoftext|&gt;)
/// concatenated and cut into block-size chunks, the remainder dropped. Each epoch visits the blocks in a
/// fresh order drawn from the seed and the epoch number, so any position in training can be recreated.
/// </summary>
/// <remarks>
/// With <c>titleInEveryBlock</c>, a block whose first token falls inside a paper starts instead with that paper's
/// <c>&lt;|CAT|&gt; Title &lt;|sep|&gt;</c> (or, where the cut falls in the title, the part of it before the cut),
/// followed by the stream from the cut on: under plain concatenation about half the papers are cut, and their tails
/// are learned with no title in view, which teaches the model that an abstract need not follow from its title. The
/// repeated prompt's own next-token losses are not trained (<see cref="UntrainedPositions"/>): its tokens were
/// learned where they first stood. The stream then advances by the block size less the prompt, so nothing is skipped
/// or learned twice.
/// </remarks>
public sealed class BlockDataset
{
    private readonly TokenSplit _split;
    private readonly long[]? _starts;          // per block: where its share of the stream begins
    private readonly long[]? _promptOffsets;   // per block: where its repeated prompt begins in the stream
    private readonly int[]? _promptLengths;    // per block: the repeated prompt's tokens (0: none)

    public BlockDataset(TokenSplit split, int blockSize, long maxBlocks = long.MaxValue, bool titleInEveryBlock = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 2);
        _split = split;
        BlockSize = blockSize;
        TitleInEveryBlock = titleInEveryBlock;
        if (titleInEveryBlock)
            (_starts, _promptOffsets, _promptLengths) = Layout(split, blockSize, maxBlocks);
        BlockCount = _starts?.Length ?? (int)Math.Min(split.TokenCount / blockSize, maxBlocks);
        if (BlockCount == 0)
            throw new ArgumentException($"The {split.Name} split has {split.TokenCount} tokens, not enough for one block of {blockSize}");
    }

    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }

    /// <summary>Blocks in the dataset.</summary>
    public int BlockCount { get; }

    /// <summary>Whether a block cut inside a paper starts with that paper's prompt.</summary>
    public bool TitleInEveryBlock { get; }

    /// <summary>The order blocks are visited in during <paramref name="epoch"/> (0-based).</summary>
    public int[] EpochOrder(long seed, int epoch)
    {
        var order = Enumerable.Range(0, BlockCount).ToArray();
        var random = new SplitMix64((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)epoch);
        random.Shuffle(order.AsSpan());
        return order;
    }

    /// <summary>The given blocks as a batch of token ids (B, T).</summary>
    public Tensor Batch(ReadOnlySpan<int> blocks)
    {
        var ids = new long[blocks.Length * BlockSize];
        for (int b = 0; b < blocks.Length; b++)
        {
            int block = blocks[b], prompt = _promptLengths?[block] ?? 0;
            long start = _starts?[block] ?? (long)block * BlockSize;
            var row = ids.AsSpan(b * BlockSize, BlockSize);
            if (prompt > 0)
                Copy(_split.Slice(_promptOffsets![block], prompt), row);
            Copy(_split.Slice(start, BlockSize - prompt), row[prompt..]);
        }
        return tensor(ids, [blocks.Length, BlockSize]);
    }

    /// <summary>Per row of <see cref="Batch"/>: how many leading positions predict a repeated prompt's tokens and so are
    /// not trained; null when no block repeats one.</summary>
    public int[]? UntrainedPositions(ReadOnlySpan<int> blocks)
    {
        if (_promptLengths is null)
            return null;
        var untrained = new int[blocks.Length];
        for (int b = 0; b < blocks.Length; b++)
            untrained[b] = Math.Max(0, _promptLengths[blocks[b]] - 1); // the prompt's last token predicts the stream's first
        return untrained;
    }

    /// <summary>How many tokens of a paper's prompt block <paramref name="block"/> repeats before its share of the stream.</summary>
    public int RepeatedPromptLength(int block) => _promptLengths?[block] ?? 0;

    private static void Copy(ReadOnlySpan<ushort> tokens, Span<long> into)
    {
        for (int t = 0; t < tokens.Length; t++)
            into[t] = tokens[t];
    }

    /// <summary>Cuts the stream into blocks, each cut inside a paper preceded by that paper's prompt up to the cut.</summary>
    private static (long[] Starts, long[] PromptOffsets, int[] PromptLengths) Layout(TokenSplit split, int blockSize, long maxBlocks)
    {
        var starts = new List<long>();
        var offsets = new List<long>();
        var lengths = new List<int>();
        var examples = split.Examples;
        int k = 0;
        long position = 0;
        while (starts.Count < maxBlocks)
        {
            while (k < examples.Count && examples[k].Offset + examples[k].Length <= position)
                k++;
            int prompt = 0;
            if (k < examples.Count && position > examples[k].Offset)
            {
                prompt = (int)Math.Min(position - examples[k].Offset, PromptLength(split, examples[k]));
                if (2 * prompt > blockSize)
                    prompt = 0; // a prompt filling most of a block would leave too little to learn from it
            }
            if (position + blockSize - prompt > split.TokenCount)
                break;
            starts.Add(position);
            offsets.Add(k < examples.Count ? examples[k].Offset : 0);
            lengths.Add(prompt);
            position += blockSize - prompt;
        }
        return ([.. starts], [.. offsets], [.. lengths]);
    }

    /// <summary>Tokens of <c>&lt;|CAT|&gt; Title &lt;|sep|&gt;</c> at the start of an example (0 if it has no separator).</summary>
    private static int PromptLength(TokenSplit split, ExampleSpan example)
    {
        var tokens = split.Slice(example.Offset, example.Length);
        int sep = tokens.IndexOf((ushort)Gpt2Tokenizer.Separator);
        return sep < 0 ? 0 : sep + 1;
    }
}
