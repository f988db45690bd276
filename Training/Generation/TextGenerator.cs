using System.Runtime.InteropServices;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Generation;

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason
{
    /// <summary>It produced &lt;|endoftext|&gt;.</summary>
    Stop,

    /// <summary>It reached its max new tokens or the model's block size.</summary>
    Length,
}

/// <summary>The rules every decoding loop applies to a sequence, kept in one place.</summary>
internal static class SequenceRules
{
    /// <summary>Why a sequence ends after its newest token, or null if it goes on: &lt;|endoftext|&gt; stops it; its
    /// max new tokens or a full KV cache (the model's block size) cut it at length.</summary>
    public static FinishReason? FinishAfter(int token, int generated, int maxNewTokens, bool cacheFull) =>
        token == Gpt2Tokenizer.EndOfText ? FinishReason.Stop
        : generated >= maxNewTokens || cacheFull ? FinishReason.Length
        : null;

    /// <summary>Throws naming the first prompt id outside the model's vocabulary.</summary>
    public static void CheckInVocabulary(GptConfig config, IEnumerable<int> ids, string paramName)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)config.VocabSize)
                throw new ArgumentOutOfRangeException(paramName, id, $"token id outside the model's vocabulary of {config.VocabSize}");
    }
}

/// <summary>One generated token of one sequence in a batch step.</summary>
/// <param name="Row">Which sequence of the batch.</param>
/// <param name="Token">The token id (&lt;|endoftext|&gt; included when the sequence stops on it).</param>
/// <param name="Finish">Set on the sequence's last token.</param>
public readonly record struct GeneratedToken(int Row, int Token, FinishReason? Finish);

/// <summary>
/// Autoregressive decoding with a KV cache: one prefill of the prompts, then one forward per new token.
/// Each sequence samples with its own <see cref="TokenSampler"/>.
/// </summary>
public sealed class TextGenerator(Gpt model)
{
    /// <summary>
    /// Generates for a batch of prompts of equal length, yielding each step's tokens as soon as they exist.
    /// Finished sequences stop yielding (their rows keep being computed until the whole batch is done).
    /// </summary>
    /// <param name="prompts">Token ids, all of the same length.</param>
    /// <param name="samplers">One per prompt; their settings give each sequence's max new tokens.</param>
    public IEnumerable<GeneratedToken[]> GenerateBatch(IReadOnlyList<int[]> prompts, IReadOnlyList<TokenSampler> samplers)
    {
        if (prompts.Count == 0 || prompts.Count != samplers.Count)
            throw new ArgumentException($"Need one sampler per prompt; got {prompts.Count} prompts and {samplers.Count} samplers");
        int promptLength = prompts[0].Length;
        if (promptLength == 0)
            throw new ArgumentException("A prompt must hold at least one token", nameof(prompts));
        if (prompts.Any(p => p.Length != promptLength))
            throw new ArgumentException($"Prompts in one batch must have equal length; got {string.Join(", ", prompts.Select(p => p.Length))}", nameof(prompts));
        int blockSize = model.Config.BlockSize;
        if (promptLength >= blockSize)
            throw new ArgumentOutOfRangeException(nameof(prompts), $"A prompt of {promptLength} tokens leaves no room to generate within the block size {blockSize}");
        SequenceRules.CheckInVocabulary(model.Config, prompts.SelectMany(p => p), nameof(prompts));

        int batch = prompts.Count;
        int maxNew = samplers.Max(s => s.Settings.MaxNewTokens);
        int capacity = Math.Min(blockSize, promptLength + maxNew);
        var generated = new int[batch];
        var done = new bool[batch];
        var last = new int[batch];
        int running = batch;

        using var cache = model.NewCache(batch, capacity);
        using var noGrad = no_grad();
        var next = tensor(prompts.SelectMany(p => p).Select(i => (long)i).ToArray(), [batch, promptLength]); // (B, T)
        try
        {
            while (running > 0)
            {
                var step = new List<GeneratedToken>(batch);
                using (var scope = NewDisposeScope())
                {
                    var logits = model.NextTokenLogits(next, cache).contiguous(); // (B, V) float32
                    var rows = MemoryMarshal.Cast<byte, float>(logits.bytes);
                    int vocab = (int)logits.shape[1];
                    var chosen = new long[batch];
                    for (int row = 0; row < batch; row++)
                    {
                        if (done[row])
                        {
                            chosen[row] = last[row]; // a placeholder the row's output never shows, valid in any vocabulary
                            continue;
                        }
                        int token = samplers[row].Next(rows.Slice(row * vocab, vocab));
                        chosen[row] = last[row] = token;
                        generated[row]++;
                        var finish = SequenceRules.FinishAfter(token, generated[row], samplers[row].Settings.MaxNewTokens, cache.Length >= capacity);
                        if (finish is not null)
                        {
                            done[row] = true;
                            running--;
                        }
                        step.Add(new GeneratedToken(row, token, finish));
                    }
                    next.Dispose();
                    next = tensor(chosen, [batch, 1L]).DetachFromDisposeScope(); // (B, 1)
                }
                yield return [.. step];
            }
        }
        finally
        {
            next.Dispose();
        }
    }

    /// <summary>Generates one sequence, yielding its tokens (&lt;|endoftext|&gt; is not yielded).</summary>
    public IEnumerable<int> Generate(int[] prompt, TokenSampler sampler)
    {
        foreach (var step in GenerateBatch([prompt], [sampler]))
        {
            var token = step[0];
            if (token.Token != Gpt2Tokenizer.EndOfText)
                yield return token.Token;
        }
    }
}
