using System.Diagnostics;

namespace OrleansGpt.Tests.Cli;

/// <summary>Runs the Training command line (OrleansGpt.Training.dll, copied into the test output) as a process.</summary>
internal static class TrainingCli
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>Starts the command line with its output and errors redirected; the caller reads and waits.</summary>
    public static Process Start(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "OrleansGpt.Training.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        return Process.Start(start)!;
    }

    /// <summary>Runs the command line to its end (3 minutes at most).</summary>
    public static Result Run(params string[] args)
    {
        using var process = Start(args);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"OrleansGpt.Training {string.Join(' ', args)} did not finish in 3 minutes");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
