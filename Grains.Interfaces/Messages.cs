namespace OrleansGpt.Grains.Interfaces;

/// <summary>How tokens are chosen, as a client sends them. Validated where they enter the cluster.</summary>
/// <param name="TopP">Nucleus sampling mass, 0 &lt; p &lt;= 1 (the paper: 0.9).</param>
/// <param name="TopK">Keep the k most likely tokens; 0 turns it off.</param>
/// <param name="Temperature">Divides the logits; 0 is greedy.</param>
/// <param name="MaxTokens">Tokens to generate at most.</param>
/// <param name="Seed">Makes the output reproducible; null picks one (reported back).</param>
[GenerateSerializer, Immutable]
public sealed record SamplingOptions(
    [property: Id(0)] double TopP = 0.9,
    [property: Id(1)] int TopK = 0,
    [property: Id(2)] double Temperature = 1.0,
    [property: Id(3)] int MaxTokens = 256,
    [property: Id(4)] long? Seed = null,
    [property: Id(5)] IReadOnlyDictionary<int, double>? LogitBias = null);

/// <summary>A generation request for a model grain: GPT-2 token ids and sampling options.</summary>
[GenerateSerializer, Immutable]
public sealed record GenerationRequest(
    [property: Id(0)] int[] PromptTokens,
    [property: Id(1)] SamplingOptions Sampling);

/// <summary>A piece of a streamed generation: text that is complete UTF-8, the tokens it came from, and on the
/// last piece why generation ended ("stop" at &lt;|endoftext|&gt;, "length" at the token limit).</summary>
/// <param name="Version">The checkpoint version writing this request: the same on every piece of one request, also
/// across a promotion.</param>
/// <param name="Replica">The replica ("size@node/device") writing it.</param>
[GenerateSerializer, Immutable]
public sealed record GeneratedChunk(
    [property: Id(0)] string Text,
    [property: Id(1)] int[] Tokens,
    [property: Id(2)] string? FinishReason,
    [property: Id(3)] string Version = "",
    [property: Id(4)] string Replica = "");

/// <summary>What a model grain hosts, where, and how its weights were made.</summary>
/// <param name="Key">The replica's full key, "size@node/device".</param>
/// <param name="Node">The silo node that owns the device (ModelHost:Node).</param>
/// <param name="Device">The device on that node: cpu:0, cuda:0, ...</param>
/// <param name="Provenance">How the checkpoint was made: untrained, trained from scratch for N tokens, fine-tuned from ...</param>
/// <param name="Silo">The address of the silo the grain runs on.</param>
/// <param name="MaxPromptTokens">The longest prompt this replica accepts.</param>
/// <param name="MaxNewTokens">The largest max_tokens this replica accepts.</param>
/// <param name="Version">The checkpoint version it serves (see <see cref="ICheckpointRegistryGrain"/>).</param>
[GenerateSerializer, Immutable]
public sealed record ModelInfo(
    [property: Id(0)] string Key,
    [property: Id(1)] string Size,
    [property: Id(2)] string Device,
    [property: Id(3)] string Checkpoint,
    [property: Id(4)] string Provenance,
    [property: Id(5)] long Parameters,
    [property: Id(6)] string Node,
    [property: Id(7)] string Silo,
    [property: Id(8)] int MaxPromptTokens,
    [property: Id(9)] int MaxNewTokens,
    [property: Id(10)] string Version = "");

/// <summary>How busy one model replica is right now: requests decoding, requests waiting, and its batch slots.</summary>
/// <param name="Generated">Tokens generated since its engine started (two readings give tokens per second).</param>
/// <param name="Failing">Whether its last requests all failed in the model (ModelHost:UnhealthyAfterFailures in a
/// row): routing prefers any other replica of the size.</param>
[GenerateSerializer, Immutable]
public sealed record ModelLoad(
    [property: Id(0)] int Running,
    [property: Id(1)] int Queued,
    [property: Id(2)] int Slots,
    [property: Id(3)] long Generated = 0,
    [property: Id(4)] bool Failing = false)
{
    /// <summary>Requests per slot, queued ones included: what "least loaded" compares.</summary>
    public double Utilisation => (Running + Queued) / (double)Math.Max(1, Slots);
}

/// <summary>One model replica a silo advertises: a checkpoint size on one of its devices.</summary>
/// <param name="Key">The model grain key, "size@node/device".</param>
[GenerateSerializer, Immutable]
public sealed record ReplicaInfo(
    [property: Id(0)] string Key,
    [property: Id(1)] string Size,
    [property: Id(2)] string Node,
    [property: Id(3)] string Device);

/// <summary>A user's settings, kept by their session grain.</summary>
/// <param name="Category">arXiv category for abstracts: AI, LG, CL or CV.</param>
/// <param name="ModelSize">Which checkpoint size serves the user (tiny, distil, small, ...).</param>
[GenerateSerializer, Immutable]
public sealed record SessionSettings(
    [property: Id(0)] string Category,
    [property: Id(1)] string ModelSize,
    [property: Id(2)] SamplingOptions Sampling)
{
    /// <summary>Defaults for a new session: cs.CL, the tiny model, the paper's top-p 0.9.</summary>
    public static SessionSettings Default { get; } = new("CL", "tiny", new SamplingOptions());
}

/// <summary>One title the user asked about and the abstract they got.</summary>
/// <param name="Seed">The seed it was sampled with: the same settings and seed give the same text.</param>
/// <param name="Version">The checkpoint version that wrote it.</param>
[GenerateSerializer, Immutable]
public sealed record HistoryEntry(
    [property: Id(0)] string Category,
    [property: Id(1)] string Title,
    [property: Id(2)] string Abstract,
    [property: Id(3)] long Seed,
    [property: Id(4)] DateTimeOffset At,
    [property: Id(5)] string Version = "");
