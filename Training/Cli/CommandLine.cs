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

    /// <summary>The --dtype option (fp32 or bf16).</summary>
    public static Option<string> DtypeOption(string defaultValue = "fp32") => new("--dtype")
    {
        Description = "Compute precision: fp32 or bf16 (bf16 falls back to fp32 on CPUs without avx512_bf16)",
        DefaultValueFactory = _ => defaultValue,
    };

    /// <summary>Resolves a --dtype value, printing the reason on stderr when bf16 falls back to fp32.</summary>
    public static Precision ResolvePrecision(string text)
    {
        var (precision, fallback) = PrecisionSupport.Resolve(PrecisionSupport.Parse(text), CPU);
        if (fallback is not null)
            Console.Error.WriteLine($"note: {fallback}");
        return precision;
    }

    /// <summary>Prints a number with thousands separators, as the logs do.</summary>
    public static string Thousands(long n) => n.ToString("N0", CultureInfo.InvariantCulture);
}
