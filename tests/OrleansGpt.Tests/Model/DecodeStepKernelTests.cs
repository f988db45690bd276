using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>Tests that switch <see cref="SmallBatchMatMul.Enabled"/>, which every model in the process reads, so they run alone.</summary>
[CollectionDefinition(nameof(ProcessWideKernelSwitch), DisableParallelization = true)]
public sealed class ProcessWideKernelSwitch;

/// <summary>A model's decode step through <see cref="SmallBatchMatMul"/>: libtorch's logits, and libtorch's threads given back after.</summary>
[Collection(nameof(ProcessWideKernelSwitch))]
public sealed class DecodeStepKernelTests
{
    [Fact]
    public void ADecodeStepOfAFewRowsGivesTheLogitsLibTorchGives()
    {
        using var model = TestModels.Random();
        using var _ = no_grad();
        int[][] prompts = [[5, 17, 200, 42], [299, 0, 7, 7], [128, 64, 3, 250]];
        float[] Step(bool own)
        {
            bool was = SmallBatchMatMul.Enabled;
            SmallBatchMatMul.Enabled = own;
            try
            {
                using var cache = model.NewCache(prompts.Length, 8);
                using var ids = tensor(prompts.SelectMany(p => p).Select(i => (long)i).ToArray(), [prompts.Length, 4L]);
                using var prefill = model.NextTokenLogits(ids, cache);                  // 12 positions: libtorch either way
                using var next = tensor(new long[] { 1, 2, 3 }, [3L, 1L]);
                using var logits = model.NextTokenLogits(next, cache);                  // 3 rows: the kernel when on
                return TestModels.Values(logits);
            }
            finally
            {
                SmallBatchMatMul.Enabled = was;
            }
        }

        var own = Step(own: true);
        var torch = Step(own: false);
        Assert.Equal(torch.Length, own.Length);
        float worst = own.Zip(torch, (a, b) => MathF.Abs(a - b)).Max();
        Assert.True(worst < 1e-4f, $"logits differ by up to {worst}");
    }

    [Fact]
    public void LibTorchsThreadsAreLimitedOnlyOnTheCallingThreadAndOnlyForTheStep()
    {
        using var model = TestModels.Random(); // libtorch and its OpenMP runtime are loaded
        int before = get_num_threads();
        Assert.True(OpenMpThreads.Available || !OperatingSystem.IsLinux(), "libtorch's libgomp was not found in this process");
        using (OpenMpThreads.LimitTo(1))
        {
            Assert.Equal(1, get_num_threads());
            int elsewhere = 0;
            var other = new Thread(() => elsewhere = get_num_threads());
            other.Start();
            other.Join();
            Assert.Equal(before, elsewhere); // other threads keep theirs
        }
        Assert.Equal(before, get_num_threads());

        using var _ = no_grad();
        using var cache = model.NewCache(1, 4);
        using var logits = model.NextTokenLogits(TestModels.Ids(5), cache); // a one-row step limits and restores
        Assert.Equal(before, get_num_threads());
    }
}
