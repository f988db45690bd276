using System.CommandLine;
using System.Globalization;
using OrleansGpt.Training.Model;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Cli;

/// <summary>What every command shares: error reporting and the common options.</summary>
internal static class CommandLine
{
    /// <summary>
    /// Runs a command body. Errors caused by input (bad arguments, missing or malformed files) print one
    /// line on stderr and exit 1; anything else is a bug and keeps its stack trace.
    /// </summary>
    public static void SetHandler(this Command command, Func<ParseResult, int> body) =>
        command.SetAction(parseResult =>
        {
            try
            {
                return body(parseResult);
            }
            catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or FormatException or InvalidOperationException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 1;
            }
        });

    /// <summary>Parses "1,8,32" into integers.</summary>
    public static int[] ParseIntList(string text, string optionName) =>
        [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s =>
            int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0
                ? v
                : throw new ArgumentException($"{optionName}: '{s}' is not a positive whole number"))];

    /// <summary>The benchmarks' --kernel option: who runs the measured work, comma-separated to compare side by side ("own":
    /// our kernels, by default the decode step's <see cref="Numerics.SmallBatchMatMul"/> and <see cref="Numerics.DecodeAttention"/>;
    /// "torch": libtorch for all of it).</summary>
    /// <param name="ownKernels">The help's opening for another use, up to the open parenthesis's list: "Training: own (...".</param>
    public static Option<string> KernelOption(string? ownKernels = null) => new("--kernel")
    {
        Description = $"{ownKernels ?? $"Decode steps: own (products of up to {Numerics.SmallBatchMatMul.MaxRowsText}, and attention over a cache in the model's dtype"}; at the widest vectors this CPU has: AVX-512, AVX2 or SSE/NEON), torch, or both comma-separated to compare",
        DefaultValueFactory = _ => "own",
    };

    /// <summary>Parses --kernel: true for "own", false for "torch"; "own" is refused only where the runtime vectorises nothing.</summary>
    public static bool[] ParseKernels(string text) =>
        [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => s.ToLowerInvariant() switch
        {
            "torch" => false,
            "own" when Numerics.DecodeKernels.IsSupported => true,
            "own" => throw new ArgumentException("--kernel own needs vector instructions .NET accelerates (SSE2 or NEON), which this process has none of; use --kernel torch"),
            _ => throw new ArgumentException($"--kernel: '{s}' is not one of own, torch"),
        })];

    /// <summary>Names a --kernel value for tables.</summary>
    public static string KernelName(bool own) => own ? "own" : "torch";

    /// <summary>The --dtype option (fp32 or bf16).</summary>
    public static Option<string> DtypeOption(string defaultValue = "fp32") => new("--dtype")
    {
        Description = "Precision: fp32 or bf16 (on CPUs without avx512_bf16, decoding keeps bf16 weights and computes in fp32 registers; training and evaluation use fp32)",
        DefaultValueFactory = _ => defaultValue,
    };

    /// <summary>Resolves a --dtype value for training or evaluation (<paramref name="decoding"/> false) or for decoding,
    /// printing on stderr what happens when it is not simply what was asked (<see cref="PrecisionSupport.Resolve"/>).</summary>
    public static Precision ResolvePrecision(string text, bool decoding = false)
    {
        var (precision, fallback) = PrecisionSupport.Resolve(PrecisionSupport.Parse(text), CPU, decoding);
        if (fallback is not null)
            Console.Error.WriteLine($"note: {fallback}");
        return precision;
    }

    /// <summary>Prints a number with thousands separators, as the logs do.</summary>
    public static string Thousands(long n) => n.ToString("N0", CultureInfo.InvariantCulture);
}
