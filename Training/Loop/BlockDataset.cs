using OrleansGpt.Training.Data;
using OrleansGpt.Training.Numerics;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Loop;

/// <summary>
/// Training blocks as Hugging Face's run_clm makes them: the split's examples (each ending in &lt;|endoftext|&gt;)
/// concatenated and cut into block-size chunks, the remainder dropped. Each epoch visits the blocks in a
/// fresh order drawn from the seed and the epoch number, so any position in training can be recreated.
/// </summary>
public sealed class BlockDataset
{
    private readonly TokenSplit _split;

    public BlockDataset(TokenSplit split, int blockSize, long maxBlocks = long.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 2);
        _split = split;
        BlockSize = blockSize;
        BlockCount = (int)Math.Min(split.TokenCount / blockSize, maxBlocks);
        if (BlockCount == 0)
            throw new ArgumentException($"The {split.Name} split has {split.TokenCount} tokens, not enough for one block of {blockSize}");
    }

    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }

    /// <summary>Blocks in the dataset.</summary>
    public int BlockCount { get; }

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
            var tokens = _split.Slice((long)blocks[b] * BlockSize, BlockSize);
            for (int t = 0; t < BlockSize; t++)
                ids[b * BlockSize + t] = tokens[t];
        }
        return tensor(ids, [blocks.Length, BlockSize]);
    }
}
