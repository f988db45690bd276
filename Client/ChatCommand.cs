using System.Globalization;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Client;

/// <summary>
/// A chat-style terminal client: a title on its own line streams an abstract in; slash commands change the
/// session's settings, which the session grain keeps, so they survive a client restart.
/// </summary>
public static class ChatCommand
{
    private const string Help = """
        Type a paper title to get an abstract. Commands:
          /category AI|LG|CL|CV   /model tiny|distil|small|...   /top-p 0.9   /top-k 0
          /temperature 1.0   /max-tokens 256   /seed 7 (or /seed none)   /settings   /history   /help   /quit
        """;

    public static async Task<int> RunAsync(IClusterClient cluster, string user, TextReader input, TextWriter output)
    {
        var session = cluster.GetGrain<ISessionGrain>(user);
        output.WriteLine($"Session '{user}'. {Describe(await ClusterConnection.Transient.ExecuteAsync(async ct => await session.GetSettingsAsync(ct)))}");
        output.WriteLine("/help for commands.");
        while (true)
        {
            output.Write("> ");
            string? line = input.ReadLine();
            if (line is null || line.Trim() is "/quit" or "/exit")
                return 0;
            line = line.Trim();
            if (line.Length == 0)
                continue;
            try
            {
                if (line.StartsWith('/'))
                    await CommandAsync(session, line, output);
                else
                    await WriteAbstractAsync(session, line, output);
            }
            catch (ArgumentException e)
            {
                output.WriteLine($"error: {e.Message.Split(" (Parameter ")[0]}");
            }
            catch (ModelBusyException e)
            {
                output.WriteLine($"busy: {e.Message}");
            }
            catch (GenerationInterruptedException e)
            {
                output.WriteLine();
                output.WriteLine($"interrupted: {e.Message}");
            }
        }
    }

    private static async Task WriteAbstractAsync(ISessionGrain session, string title, TextWriter output)
    {
        // Only the start of the stream is retried (a session whose silo died is activated on another from its stored
        // state): once text has arrived, a retry would repeat it, so a later loss is reported instead.
        string? finish = null;
        int tokens = 0;
        await foreach (var chunk in ResilientStreams.UntilFirstItemAsync(() => Task.FromResult(session.WriteAbstractAsync(title))))
        {
            output.Write(chunk.Text);
            finish = chunk.FinishReason ?? finish;
            tokens += chunk.Tokens.Length;
        }
        // An abstract that hit the limit usually stops mid-sentence, even mid-word: say so, and how to get more.
        output.WriteLine(finish == "length" ? $" ... [cut at the {tokens}-token limit; /max-tokens N for longer]" : "");
    }

    private static async Task CommandAsync(ISessionGrain session, string line, TextWriter output)
    {
        string[] parts = line.Split(' ', 2, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        string command = parts[0], value = parts.Length > 1 ? parts[1] : "";
        if (command == "/help") { output.WriteLine(Help); return; }
        if (command == "/history")
        {
            foreach (var entry in await ClusterConnection.Transient.ExecuteAsync(async ct => await session.GetHistoryAsync(ct)))
                output.WriteLine($"[{entry.Category}] {entry.Title} (seed {entry.Seed})\n  {entry.Abstract}");
            return;
        }
        var settings = await ClusterConnection.Transient.ExecuteAsync(async ct => await session.GetSettingsAsync(ct));
        if (command == "/settings") { output.WriteLine(Describe(settings)); return; }
        var s = settings.Sampling;
        var updated = command switch
        {
            "/category" => settings with { Category = value },
            "/model" => settings with { ModelSize = value },
            "/top-p" => settings with { Sampling = s with { TopP = Number(value) } },
            "/top-k" => settings with { Sampling = s with { TopK = (int)Number(value) } },
            "/temperature" => settings with { Sampling = s with { Temperature = Number(value) } },
            "/max-tokens" => settings with { Sampling = s with { MaxTokens = (int)Number(value) } },
            "/seed" => settings with { Sampling = s with { Seed = value == "none" ? null : (long)Number(value) } },
            _ => throw new ArgumentException($"Unknown command {command}; /help lists them"),
        };
        output.WriteLine(Describe(await ClusterConnection.Transient.ExecuteAsync(async ct => await session.UpdateSettingsAsync(updated, ct))));
    }

    private static double Number(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : throw new ArgumentException($"'{text}' is not a number");

    private static string Describe(SessionSettings s) => string.Create(CultureInfo.InvariantCulture,
        $"category {s.Category}, model {s.ModelSize}, top-p {s.Sampling.TopP}, top-k {s.Sampling.TopK}, temperature {s.Sampling.Temperature}, max tokens {s.Sampling.MaxTokens}, seed {(s.Sampling.Seed?.ToString(CultureInfo.InvariantCulture) ?? "random")}");
}
