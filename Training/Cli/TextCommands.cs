using System.CommandLine;
using System.Globalization;
using OrleansGpt.Training.Text;

namespace OrleansGpt.Training.Cli;

/// <summary>tokenize and detokenize.</summary>
internal static class TextCommands
{
    public static void AddTo(RootCommand root)
    {
        var text = new Argument<string>("text") { Description = "The text to encode (special-token strings stay text)" };
        var tokenize = new Command("tokenize", "Print the GPT-2 token ids of a text, space-separated") { text };
        tokenize.SetHandler(r =>
        {
            Console.WriteLine(string.Join(' ', Gpt2Tokenizer.Shared.Encode(r.GetValue(text)!)));
            return 0;
        });
        root.Subcommands.Add(tokenize);

        var ids = new Argument<string[]>("ids") { Description = "Token ids, separated by spaces or commas", Arity = ArgumentArity.OneOrMore };
        var detokenize = new Command("detokenize", "Print the text of token ids (50256 = <|endoftext|>, 50257 = <|sep|>)") { ids };
        detokenize.SetHandler(r =>
        {
            Console.WriteLine(Gpt2Tokenizer.Shared.Decode(ParseTokenIds(string.Join(',', r.GetValue(ids)!))));
            return 0;
        });
        root.Subcommands.Add(detokenize);
    }

    /// <summary>Parses "464,3290" or "464 3290" into token ids, rejecting anything outside the vocabulary.</summary>
    public static int[] ParseTokenIds(string text) =>
        [.. text.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s =>
            int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int id) && id >= 0 && id < Gpt2Tokenizer.VocabSize
                ? id
                : throw new ArgumentException($"'{s}' is not a token id (0 .. {Gpt2Tokenizer.VocabSize - 1})"))];
}
