using System.Net.Http.Json;
using System.Text.Json;

namespace OrleansGpt.Tests.Grains;

/// <summary>What an HTTP client sees when the replica writing its stream is lost after the stream has started. The
/// replica's engine is ended in place (deterministic, unlike an in-process silo kill, which can take effect after
/// the last token); a silo killed with -9 is in <see cref="Cluster.ClusterFaultTests"/>.</summary>
public sealed class StreamFailureTests
{
    [Fact]
    public async Task AStreamCutByItsReplicasLossEndsWithAnErrorEventSayingItMayBeRetried()
    {
        // Silo a serves the HTTP API and "other"; silo b holds the only "tiny" replica, a model slow enough (4 layers,
        // 256 wide) that 1,000 tokens take seconds, so the stream is still running when its engine ends.
        var config = TestModels.TinyGpt2Vocabulary with { BlockSize = 1024, Layers = 4, Heads = 4, Embedding = 256 };
        await using var serving = await ServingCluster.StartAsync([("tiny", config, 1, "stream failure tiny"), ("other", config, 2, "on a")], (silo, o) =>
        {
            o.Node = silo == 0 ? "a" : "b";
            o.Replicas = silo == 0 ? ["other@cpu:0"] : ["tiny@cpu:0"];
            o.MaxNewTokens = 1000;
        }, silos: 2);

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = JsonContent.Create(new { model = "tiny", prompt = "We propose", max_tokens = 1000, seed = 3, stream = true }),
        };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        using var response = await serving.Api.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token));
        var events = new List<string>();
        bool lost = false;
        for (string? line; (line = await reader.ReadLineAsync(timeout.Token)) is not null;)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
                continue;
            events.Add(line[6..]);
            if (!lost)
            {
                lost = true;
                serving.Host("b").Get("tiny@b/cpu:0").Engine.Dispose();
            }
        }

        Assert.True(events.Count > 1);
        Assert.DoesNotContain("[DONE]", events);
        var last = JsonDocument.Parse(events[^1]).RootElement.GetProperty("error");
        Assert.Equal(("replica_lost", "server_error"), (last.GetProperty("code").GetString(), last.GetProperty("type").GetString()));
        Assert.Contains("send it again", last.GetProperty("message").GetString());
    }
}
