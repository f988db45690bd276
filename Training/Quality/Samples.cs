using System.Text.Json;
using OrleansGpt.Training.Data;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Training.Quality;

/// <summary>One abstract to measure: where it came from (a model version, or "real"), its category and title, the text,
/// and whether it ended by itself (with &lt;|endoftext|&gt;) rather than at the token limit; null when unknown.</summary>
public sealed record Sample(string Source, ArxivCategory Category, string Title, string Text, bool? EndedByItself);

/// <summary>Reading samples: generated ones from a JSONL file, real ones from a prepared data split.</summary>
public static class Samples
{
    /// <summary>
    /// A JSONL file, one object per line: {"category", "title", "text"} and optionally "source" (default: the file's
    /// name) and "finish_reason" ("stop" = ended with &lt;|endoftext|&gt;, "length" = cut at the limit), as
    /// `Client -- appendix` writes beside its markdown. A malformed line is refused with its number and what to fix.
    /// </summary>
    public static IReadOnlyList<Sample> ReadJsonl(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"No sample file {path}", path);
        string fallbackSource = Path.GetFileNameWithoutExtension(path);
        var samples = new List<Sample>();
        int number = 0;
        foreach (string line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line))
                continue;
            try
            {
                using var document = JsonDocument.Parse(line);
                var o = document.RootElement;
                if (o.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException("expected a JSON object");
                string Field(string name) => o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } s
                    ? s : throw new InvalidDataException($"\"{name}\" is missing or not a non-empty string");
                var category = PaperFormat.ParseCategory(Field("category"));
                string? source = o.TryGetProperty("source", out var src) && src.ValueKind == JsonValueKind.String ? src.GetString() : null;
                bool? ended = o.TryGetProperty("finish_reason", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() == "stop" : null;
                samples.Add(new Sample(string.IsNullOrWhiteSpace(source) ? fallbackSource : source, category, Field("title"), Field("text"), ended));
            }
            catch (Exception e) when (e is JsonException or InvalidDataException or ArgumentOutOfRangeException)
            {
                string why = e is ArgumentOutOfRangeException ? "\"category\" must be AI, LG, CL or CV (or cs.AI, ...)" : e.Message;
                throw new InvalidDataException($"{path}:{number}: {why}. Each line is {{\"category\": \"CL\", \"title\": \"...\", \"text\": \"...\"}}, optionally with \"source\" and \"finish_reason\".");
            }
        }
        if (samples.Count == 0)
            throw new InvalidDataException($"{path} holds no samples");
        return samples;
    }

    /// <summary>The papers of a prepared split as samples (source "real"), decoded from their tokens; at most
    /// <paramref name="limit"/>, taken in order.</summary>
    public static IReadOnlyList<Sample> ReadSplit(string dataDirectory, string split, int limit = int.MaxValue)
    {
        using var tokens = TokenSplit.Open(dataDirectory, split);
        return [.. tokens.Examples.Take(limit).Select(span =>
        {
            var (title, text) = PaperFormat.DecodeExample(tokens.Slice(span.Offset, span.Length), span.Category);
            return new Sample("real", span.Category, title, text, EndedByItself: true);
        })];
    }
}
