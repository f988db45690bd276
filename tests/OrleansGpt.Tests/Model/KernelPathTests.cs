using System.Diagnostics;
using System.Runtime.Intrinsics;
using OrleansGpt.Training.Numerics;

namespace OrleansGpt.Tests.Model;

/// <summary>The trait that marks the tests of the own kernels and of the model through them, which
/// <see cref="KernelPathTests"/> reruns at every narrower vector width.</summary>
public static class KernelPaths
{
    public const string Category = "Kernel";

    /// <summary>The width a child process was started to run at (set by <see cref="KernelPathTests"/>), or null in the parent.</summary>
    public static int? ExpectedWidth =>
        int.TryParse(Environment.GetEnvironmentVariable("ORLEANSGPT_EXPECT_SIMD_WIDTH"), out int width) ? width : null;
}

/// <summary>In this process: the kernels run at the widest width the runtime accelerates (or the one a parent asked for).</summary>
[Trait("Category", KernelPaths.Category)]
public sealed class KernelWidthTests
{
    [Fact]
    public void TheKernelsRunAtTheWidestWidthTheRuntimeAccelerates()
    {
        int widest = Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 128;
        Assert.Equal(widest, Simd.Width);
        if (KernelPaths.ExpectedWidth is { } expected)
            Assert.Equal(expected, Simd.Width); // the child really runs the narrower path it was started for
        Assert.True(DecodeKernels.IsSupported && TrainingKernels.Active, $"the own kernels run on the {Simd.Path} path");
    }
}

/// <summary>
/// The kernel tests again in child processes with the wider instruction sets switched off (DOTNET_EnableAVX512=0,
/// DOTNET_EnableAVX2=0), so that whatever host runs the suite also tests the narrower paths against the same float64
/// references and tolerances. On a host without AVX-512 the first child runs the same AVX2 path as this process.
/// </summary>
public sealed class KernelPathTests
{
    [Theory]
    [InlineData("DOTNET_EnableAVX512", 256)] // .NET 10's knob: it ignores the older DOTNET_EnableAVX512F (tried on an AVX-512 host)
    [InlineData("DOTNET_EnableAVX2", 128)]
    public async Task TheKernelTestsPassAtANarrowerWidth(string switchedOff, int widthAtMost)
    {
        int expected = Math.Min(widthAtMost, Simd.Width);
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "test", Path.Combine(AppContext.BaseDirectory, "OrleansGpt.Tests.dll"), "--filter", $"Category={KernelPaths.Category}" })
            start.ArgumentList.Add(a);
        start.Environment[switchedOff] = "0";
        start.Environment["ORLEANSGPT_EXPECT_SIMD_WIDTH"] = expected.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var child = Process.Start(start)!;
        var stdout = child.StandardOutput.ReadToEndAsync();
        var stderr = child.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        try
        {
            await child.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            child.Kill(entireProcessTree: true);
            throw new TimeoutException($"the kernel tests with {switchedOff}=0 did not finish in 5 minutes");
        }
        string output = await stdout + await stderr;
        Assert.True(child.ExitCode == 0, $"{switchedOff}=0 (width {expected}):\n{output}");
        Assert.Matches(@"Passed!\s+-\s+Failed:\s+0, Passed:\s+[1-9]", output); // tests ran, and none failed
    }
}
