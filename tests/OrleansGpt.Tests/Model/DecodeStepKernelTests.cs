using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

/// <summary>Tests that switch <see cref="DecodeKernels.Enabled"/>, which every model in the process reads, so they run alone.</summary>
[CollectionDefinition(nameof(ProcessWideKernelSwitch), DisableParallelization = true)]
public sealed class ProcessWideKernelSwitch;

/// <summary>A model's decode step through <see cref="SmallBatchMatMul"/> and <see cref="DecodeAttention"/> gives libtorch's logits, on libtorch's own threads.</summary>
[Trait("Category", KernelPaths.Category)]
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
            bool was = DecodeKernels.Enabled;
            DecodeKernels.Enabled = own;
            try
            {
                using var cache = model.NewCache(prompts.Length, 8);
                using var ids = tensor(prompts.SelectMany(p => p).Select(i => (long)i).ToArray(), [prompts.Length, 4L]);
                using var prefill = model.NextTokenLogits(ids, cache);                  // 12 positions: libtorch either way
                using var next = tensor(new long[] { 1, 2, 3 }, [3L, 1L]);
                using var logits = model.NextTokenLogits(next, cache);                  // 3 rows: the kernels when on
                return TestModels.Values(logits);
            }
            finally
            {
                DecodeKernels.Enabled = was;
            }
        }

        var own = Step(own: true);
        var torch = Step(own: false);
        Assert.Equal(torch.Length, own.Length);
        float worst = own.Zip(torch, (a, b) => MathF.Abs(a - b)).Max();
        Assert.True(worst < 1e-4f, $"logits differ by up to {worst}");
    }

    [Fact]
    public unsafe void OpenMpRunsTheBodyOnceOnEveryThreadOfLibTorchsTeam()
    {
        // The products run on libtorch's own OpenMP team: every thread number once, none twice, the caller as number 0.
        int threads = get_num_threads();
        Assert.True(OpenMp.Available || !OperatingSystem.IsLinux(), "libtorch's libgomp was not found in this process");
        var runs = new int[threads + 1];
        fixed (int* counts = runs)
            OpenMp.Parallel(&CountRun, counts, threads);
        Assert.Equal(Enumerable.Repeat(1, threads).Append(0), runs);
    }

    [Fact]
    public void ForEachThreadRunsManagedWorkOnEveryThreadOfTheTeamAndRethrowsItsFailure()
    {
        // The engine samples a step's rows this way: every thread number once, and a sampler's exception reaches the
        // engine instead of unwinding into libgomp (which would end the process).
        int threads = get_num_threads();
        var runs = new int[threads + 1];
        OpenMp.ForEachThread((part, parts) => { Assert.Equal(threads, parts); Interlocked.Increment(ref runs[part]); }, threads);
        Assert.Equal(Enumerable.Repeat(1, threads).Append(0), runs);

        var thrown = Assert.Throws<InvalidOperationException>(() =>
            OpenMp.ForEachThread((part, _) => { if (part == threads - 1) throw new InvalidOperationException("sampler failed"); }, threads));
        Assert.Equal("sampler failed", thrown.Message);
    }

    [Fact]
    public void AThreadThatReleasedItsWorkersStillRunsOnAWholeTeamAfterwards()
    {
        // Engines release the OpenMP workers of the thread that built them; that thread may use libtorch again later
        // (a test, a second engine), and its next parallel region must start a full team again. (The release's point,
        // that the engine's workers spin rather than sleep, is a timing: bench serve shows it, not this test.)
        int threads = get_num_threads();
        using var _ = no_grad();
        using var model = TestModels.Random();
        using (var logits = model.NextTokenLogits(TestModels.Ids(5, 6, 7))) { } // this thread's workers exist now
        OpenMp.ReleaseThisThreadsWorkers();
        var runs = new int[threads + 1];
        OpenMp.ForEachThread((part, _) => Interlocked.Increment(ref runs[part]), threads);
        Assert.Equal(Enumerable.Repeat(1, threads).Append(0), runs);
        OpenMp.ReleaseThisThreadsWorkers(); // twice in a row, and on a thread with no workers, is harmless
        OpenMp.ReleaseThisThreadsWorkers();
    }

    [System.Runtime.InteropServices.UnmanagedCallersOnly]
    private static unsafe void CountRun(void* counts) => Interlocked.Increment(ref ((int*)counts)[OpenMp.ThreadNumber]);
}
