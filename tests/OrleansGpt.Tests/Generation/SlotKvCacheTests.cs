using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Generation;

public sealed class SlotKvCacheTests
{
    [Fact]
    public void PromptsPrefilledTogetherWithPaddingDecodeAsEachWouldAlone()
    {
        using var noGrad = no_grad();
        using var model = TestModels.Random(seed: 11);
        int[][] prompts = [[5, 6, 7, 8, 9], [42, 17], [1, 2, 3, 4, 5, 6, 7]];
        int[] slots = [2, 0, 3]; // any empty slots, in any order

        // Each prompt alone: prefill then four greedy steps, keeping every step's logits.
        var alone = prompts.Select(p =>
        {
            var cache = new KvCache(model.Config, 1, 32, model.AttentionDtype, model.Device);
            var steps = new List<float[]>();
            var logits = model.NextTokenLogits(TestModels.Ids(p), cache);
            for (int step = 0; step < 4; step++)
            {
                steps.Add(TestModels.Values(logits));
                int next = (int)logits.argmax(-1).item<long>();
                logits.Dispose();
                logits = model.NextTokenLogits(TestModels.Ids(next), cache);
            }
            logits.Dispose();
            cache.Dispose();
            return steps;
        }).ToList();

        // Together: one right-padded prefill into three slots, then decode steps over rows [0, 4) with slot 1 idle.
        using var slotCache = new SlotKvCache(model, slots: 4, capacity: 32);
        int[] lengths = [.. prompts.Select(p => p.Length)];
        var padded = new long[prompts.Length * lengths.Max()];
        for (int i = 0; i < prompts.Length; i++)
            for (int j = 0; j < prompts[i].Length; j++)
                padded[i * lengths.Max() + j] = prompts[i][j];
        var batchLogits = model.NextTokenLogits(tensor(padded, [prompts.Length, lengths.Max()]), slotCache.PrefillMany(slots, lengths), lengths);
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(prompts[i].Length, slotCache.Length(slots[i]));

        var rowOf = new int[prompts.Length]; // which logits row holds prompt i at this step
        for (int i = 0; i < prompts.Length; i++) rowOf[i] = i;
        for (int step = 0; step < 4; step++)
        {
            var input = new long[4];
            var decoding = new bool[4];
            for (int i = 0; i < prompts.Length; i++)
            {
                var row = TestModels.Values(batchLogits[rowOf[i]]);
                AssertClose(alone[i][step], row);
                input[slots[i]] = Array.IndexOf(row, row.Max());
                decoding[slots[i]] = true;
                rowOf[i] = slots[i];
            }
            batchLogits.Dispose();
            batchLogits = model.NextTokenLogits(tensor(input, [4L, 1L]), slotCache.Decode(4, decoding));
        }
        batchLogits.Dispose();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AScrubbedSlotForgetsNonFiniteValuesThatReleaseWouldLeaveBehind(bool scrub)
    {
        using var noGrad = no_grad();
        using var model = TestModels.Random(seed: 11);
        using var broken = TestModels.Random(seed: 11); // the same weights, but NaN from position 20 on
        broken.named_parameters().First(p => p.name.EndsWith("wpe.weight", StringComparison.Ordinal)).parameter[20].fill_(float.NaN);
        int[] longPrompt = [.. Enumerable.Range(1, 25)], shortPrompt = [42, 17];
        using var alone = model.NextTokenLogits(TestModels.Ids(shortPrompt));

        using var cache = new SlotKvCache(model, slots: 2, capacity: 32);
        using (var failed = broken.NextTokenLogits(TestModels.Ids(longPrompt), cache.Prefill(1)))
            Assert.False(failed.isfinite().all().item<bool>()); // slot 1 now holds NaN at positions 20 and later
        if (scrub) cache.Scrub(1); else cache.Release(1);

        // Slot 0 holds a long healthy request, so one decode step attends 26 positions, slot 1's stale ones masked.
        using var _ = model.NextTokenLogits(TestModels.Ids(longPrompt), cache.Prefill(0));
        using var __ = model.NextTokenLogits(TestModels.Ids(shortPrompt[..1]), cache.Prefill(1));
        using var step = model.NextTokenLogits(tensor(new long[] { 7, shortPrompt[1] }, [2L, 1L]), cache.Decode(2, [true, true]));
        var row = TestModels.Values(step[1]);
        if (scrub || DecodeKernels.Active)
            AssertClose(TestModels.Values(alone[0]), row); // DecodeAttention reads a row's own positions only
        else
            Assert.Contains(row, float.IsNaN); // libtorch's attention: a masked NaN still reaches the output, 0 x NaN is NaN
    }

    private static void AssertClose(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        float worst = expected.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(worst < 1e-4f, $"logits differ by up to {worst}");
    }
}
