using OrleansGpt.Client;
using OrleansGpt.Grains.Interfaces;

namespace OrleansGpt.Tests.Grains;

/// <summary>The chat client's loop against the test cluster, driven by a scripted console.</summary>
[Collection(nameof(ClusterCollection))]
public sealed class ChatClientTests(ClusterFixture fixture)
{
    [Fact]
    public async Task SlashCommandsChangeTheSessionAndATitleStreamsAnAbstract()
    {
        var input = new StringReader("/category CV\n/max-tokens 6\n/seed 4\n/top-p 1.5\n/frobnicate\nSeeing Cats\n/history\n/quit\n");
        var output = new StringWriter();
        Assert.Equal(0, await ChatCommand.RunAsync(fixture.Client, "dave", input, output));
        string text = output.ToString();

        Assert.Contains("category CV, model tiny, top-p 0.9, top-k 0, temperature 1, max tokens 6, seed 4", text);
        Assert.Contains("error: top_p must be in (0, 1]", text);
        Assert.Contains("error: Unknown command /frobnicate", text);
        var entry = Assert.Single(await fixture.Client.GetGrain<ISessionGrain>("dave").GetHistoryAsync());
        Assert.Equal(("CV", "Seeing Cats", 4L), (entry.Category, entry.Title, entry.Seed));
        Assert.Contains(entry.Abstract, text); // streamed to the console, then listed by /history
        Assert.Contains("[CV] Seeing Cats (seed 4)", text);
        Assert.Contains(entry.Abstract + " ... [cut at the 6-token limit; /max-tokens N for longer]", text); // not a silent mid-word stop

        // Settings live in the session grain: a new client session starts with them.
        var again = new StringWriter();
        await ChatCommand.RunAsync(fixture.Client, "dave", new StringReader("/quit\n"), again);
        Assert.Contains("Session 'dave'. category CV, model tiny, top-p 0.9, top-k 0, temperature 1, max tokens 6, seed 4", again.ToString());
    }
}
