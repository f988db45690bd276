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
/// are learned with no title in view, which teaches the model that an abstract need not follow from its title. Where
/// the cut falls inside the abstract, a second <c>&lt;|sep|&gt;</c> (the continuation marker) stands between the
/// repeated prompt and the tail: without it the model learns that a prompt's <c>&lt;|sep|&gt;</c> may be followed by
/// an abstract's middle, and writes tails when asked for abstracts (the two-hour run of 2026-12-07: 73 of 100 began
/// mid-sentence). Generation never writes two, so a single <c>&lt;|sep|&gt;</c> is only ever followed by an abstract's
/// first token. The repeated prompt's own next-token losses, the marker's included, are not trained
/// (<see cref="UntrainedTargets"/>): its tokens were learned where they first stood. The stream then advances by the
/// block size less the lead, so nothing is skipped or learned twice.
/// <para>With <c>abstractOnlyLoss</c>, a position whose next token belongs to a paper's prompt (its category tag, title
/// or <c>&lt;|sep|&gt;</c>) is not trained either, wherever the prompt stands: the model learns only to write abstracts
/// (and to end them) from what precedes them, which is all generation asks of it.</para>
/// </remarks>
public sealed class BlockDataset
{
    private readonly TokenSplit _split;
    private readonly long[]? _starts;          // per block: where its share of the stream begins
    private readonly long[]? _promptOffsets;   // per block: where its repeated prompt begins in the stream
    private readonly int[]? _leadLengths;      // per block: tokens before its share of the stream (0: none)
    private readonly bool[]? _marked;          // per block: whether its lead ends in the continuation marker
    private readonly int[]? _examplePrompts;   // abstract-only loss: per example, its prompt's tokens

    public BlockDataset(TokenSplit split, int blockSize, long maxBlocks = long.MaxValue, bool titleInEveryBlock = false, bool abstractOnlyLoss = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 2);
        _split = split;
        BlockSize = blockSize;
        if (titleInEveryBlock)
            (_starts, _promptOffsets, _leadLengths, _marked) = Layout(split, blockSize, maxBlocks);
        if (abstractOnlyLoss)
            _examplePrompts = [.. split.Examples.Select(e => PromptLength(split, e))];
        BlockCount = _starts?.Length ?? (int)Math.Min(split.TokenCount / blockSize, maxBlocks);
        if (BlockCount == 0)
            throw new ArgumentException($"The {split.Name} split has {split.TokenCount} tokens, not enough for one block of {blockSize}");
    }

    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }

    /// <summary>Blocks in the dataset.</summary>
    public int BlockCount { get; }

    /// <summary>Whether a block cut inside a paper starts with that paper's prompt.</summary>
    public bool TitleInEveryBlock => _starts is not null;

    /// <summary>Whether positions predicting a prompt's tokens are left out of the loss.</summary>
    public bool AbstractOnlyLoss => _examplePrompts is not null;

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
            int block = blocks[b], lead = _leadLengths?[block] ?? 0;
            long start = _starts?[block] ?? (long)block * BlockSize;
            var row = ids.AsSpan(b * BlockSize, BlockSize);
            if (lead > 0)
            {
                int prompt = _marked![block] ? lead - 1 : lead;
                Copy(_split.Slice(_promptOffsets![block], prompt), row);
                if (prompt < lead)
                    row[prompt] = Gpt2Tokenizer.Separator; // the continuation marker
            }
            Copy(_split.Slice(start, BlockSize - lead), row[lead..]);
        }
        return tensor(ids, [blocks.Length, BlockSize]);
    }

    /// <summary>Per position of <see cref="Batch"/> (B x T, row after row): true where its next token is not trained, being
    /// a repeated prompt's (the continuation marker included) or, under the abstract-only loss, any prompt's; null when
    /// every token is trained.</summary>
    public bool[]? UntrainedTargets(ReadOnlySpan<int> blocks)
    {
        if (_leadLengths is null && _examplePrompts is null)
            return null;
        var untrained = new bool[blocks.Length * BlockSize];
        for (int b = 0; b < blocks.Length; b++)
        {
            int block = blocks[b], lead = _leadLengths?[block] ?? 0;
            var row = untrained.AsSpan(b * BlockSize, BlockSize);
            // Position t predicts token t + 1: the lead's tokens 1 .. lead - 1 (the marker among them; the lead's last
            // predicts the stream's first).
            int first = Math.Max(0, lead - 1);
            row[..first].Fill(true);
            if (_examplePrompts is not null) // position first's target is the stream's token (first + 1 - lead) past the start
                MarkPromptTargets((_starts?[block] ?? (long)block * BlockSize) + first + 1 - lead, row[first..^1]);
        }
        return untrained;
    }

    /// <summary>Flags each target of the stream from <paramref name="start"/> on (the target of into[i] is the stream's
    /// token start + i) that is a prompt token: within an example's first <see cref="PromptLength"/> tokens.</summary>
    private void MarkPromptTargets(long start, Span<bool> into)
    {
        var examples = _split.Examples;
        int lo = 0, hi = examples.Count - 1; // the last example starting at or before start
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (examples[mid].Offset <= start) lo = mid; else hi = mid - 1;
        }
        for (int i = 0, k = lo; i < into.Length; i++)
        {
            long q = start + i;
            while (k + 1 < examples.Count && examples[k + 1].Offset <= q)
                k++;
            if (q >= examples[k].Offset && q - examples[k].Offset < _examplePrompts![k])
                into[i] = true;
        }
    }

    /// <summary>How many tokens block <paramref name="block"/> puts before its share of the stream: its paper's repeated
    /// prompt and, after a whole one, the continuation marker.</summary>
    public int LeadLength(int block) => _leadLengths?[block] ?? 0;

    /// <summary>Whether block <paramref name="block"/>'s lead ends in the continuation marker (a second &lt;|sep|&gt;): its
    /// share of the stream starts inside an abstract.</summary>
    public bool HasContinuationMarker(int block) => _marked?[block] ?? false;

    private static void Copy(ReadOnlySpan<ushort> tokens, Span<long> into)
    {
        for (int t = 0; t < tokens.Length; t++)
            into[t] = tokens[t];
    }

    /// <summary>Cuts the stream into blocks, each cut inside a paper preceded by that paper's prompt up to the cut and, where
    /// the cut falls inside the abstract, by the continuation marker.</summary>
    private static (long[] Starts, long[] PromptOffsets, int[] LeadLengths, bool[] Marked) Layout(TokenSplit split, int blockSize, long maxBlocks)
    {
        var starts = new List<long>();
        var offsets = new List<long>();
        var leads = new List<int>();
        var marked = new List<bool>();
        var examples = split.Examples;
        int k = 0;
        long position = 0;
        while (starts.Count < maxBlocks)
        {
            while (k < examples.Count && examples[k].Offset + examples[k].Length <= position)
                k++;
            int lead = 0;
            bool marker = false;
            if (k < examples.Count && position > examples[k].Offset)
            {
                int prompt = PromptLength(split, examples[k]);
                long into = position - examples[k].Offset;
                marker = prompt > 0 && into > prompt; // the cut is past the abstract's first token
                lead = (int)Math.Min(into, prompt) + (marker ? 1 : 0);
                if (2 * lead > blockSize)
                    (lead, marker) = (0, false); // a prompt filling most of a block would leave too little to learn from it
            }
            if (position + blockSize - lead > split.TokenCount)
                break;
            starts.Add(position);
            offsets.Add(k < examples.Count ? examples[k].Offset : 0);
            leads.Add(lead);
            marked.Add(marker);
            position += blockSize - lead;
        }
        return ([.. starts], [.. offsets], [.. leads], [.. marked]);
    }

    /// <summary>Tokens of <c>&lt;|CAT|&gt; Title &lt;|sep|&gt;</c> at the start of an example (0 if it has no separator).</summary>
    private static int PromptLength(TokenSplit split, ExampleSpan example)
    {
        var tokens = split.Slice(example.Offset, example.Length);
        int sep = tokens.IndexOf((ushort)Gpt2Tokenizer.Separator);
        return sep < 0 ? 0 : sep + 1;
    }
}
