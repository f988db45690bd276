using System.CommandLine;
using OrleansGpt.Client;
using OrleansGpt.Grains.Interfaces;

// The Orleans client of a cluster (dotnet run --project Silo). It references Grains.Interfaces and the cluster
// settings, never libtorch. Which cluster: --redis (or Cluster__Provider=redis, Cluster__Redis=...) finds the gateways
// in the membership table; otherwise the local silo's gateway (--gateway-port, default 30000).
var root = new RootCommand("OrleansGpt client: chat for abstracts, model info and load bench against a cluster.");
var redis = new Option<string?>("--redis") { Description = "The cluster's Redis (host:port): gateways come from its membership table", Recursive = true };
var gatewayPort = new Option<int?>("--gateway-port") { Description = "Without Redis: the local silo's gateway port (default 30000)", Recursive = true };
root.Options.Add(redis);
root.Options.Add(gatewayPort);
Task<ClusterConnection> Connect(ParseResult r)
{
    var overrides = new Dictionary<string, string?>();
    if (r.GetValue(redis) is { Length: > 0 } connection)
        (overrides["Cluster:Provider"], overrides["Cluster:Redis"]) = ("redis", connection);
    if (r.GetValue(gatewayPort) is int port)
        overrides["Cluster:GatewayPort"] = port.ToString(System.Globalization.CultureInfo.InvariantCulture);
    return ClusterConnection.ConnectAsync(overrides);
}

var user = new Option<string>("--user") { Description = "Session id: settings and history are kept per user", DefaultValueFactory = _ => Environment.UserName };
var chat = new Command("chat", "Chat: a title on its own line streams an abstract; /help lists the settings commands") { user };
chat.SetAction(async r =>
{
    await using var connection = await Connect(r);
    return await ChatCommand.RunAsync(connection.Cluster, r.GetValue(user)!, Console.In, Console.Out);
});
root.Subcommands.Add(chat);

var key = new Argument<string>("model") { Description = "A size (every replica of it), or one model grain key: size@device or size@node/device", DefaultValueFactory = _ => "" };
var info = new Command("info", "Describe the cluster's model replicas: where each runs, parameters, checkpoint and how it was made") { key };
info.SetAction(async r =>
{
    await using var connection = await Connect(r);
    string wanted = r.GetValue(key)!;
    var keys = wanted.Contains('@')
        ? [wanted]
        : (await connection.Cluster.GetGrain<IModelRouterGrain>(0).GetReplicasAsync()).Where(x => wanted.Length == 0 || x.Size == wanted).Select(x => x.Key).ToList();
    if (keys.Count == 0)
        throw new ArgumentException(wanted.Length == 0 ? "No silo serves any model yet" : $"No silo serves '{wanted}'");
    foreach (var k in keys)
    {
        var i = await connection.Cluster.GetGrain<IModelGrain>(k).GetInfoAsync();
        Console.WriteLine($"{i.Key} on silo {i.Silo}: {i.Parameters:N0} parameters from {i.Checkpoint} ({i.Provenance})");
    }
    return 0;
});
root.Subcommands.Add(info);

var concurrency = new Option<string>("--concurrency") { Description = "Concurrent workers, comma-separated", DefaultValueFactory = _ => "1,8,32,64" };
var requests = new Option<int>("--requests") { Description = "Requests per concurrency level", DefaultValueFactory = _ => 64 };
var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens generated per request", DefaultValueFactory = _ => 128 };
var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length (random token ids)", DefaultValueFactory = _ => 32 };
var model = new Option<string>("--model") { Description = "Checkpoint size to load", DefaultValueFactory = _ => "small" };
var bench = new Command("bench", "Load a running silo: aggregate tok/s, req/s, time to first token and inter-token latency p50/p99, failures")
{
    concurrency, requests, maxTokens, promptTokens, model,
};
bench.SetAction(async r =>
{
    await using var connection = await Connect(r);
    return await BenchCommand.RunAsync(connection, [.. r.GetValue(concurrency)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse)],
        r.GetValue(requests), r.GetValue(maxTokens), r.GetValue(promptTokens), r.GetValue(model)!, Console.Out);
});
root.Subcommands.Add(bench);

var titles = new Option<string>("--titles") { Description = "TSV file with a 'category<TAB>title' header, one title per line", Required = true };
var output = new Option<string>("--out") { Description = "Markdown file to write", DefaultValueFactory = _ => "appendix.md" };
var appendixModel = new Option<string>("--model") { Description = "Checkpoint size that writes the abstracts", DefaultValueFactory = _ => "tiny" };
var seed = new Option<long>("--seed") { Description = "Base seed: title i is sampled with seed + i", DefaultValueFactory = _ => 1000 };
var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 0.9 };
var appendixTokens = new Option<int>("--max-tokens") { Description = "Tokens per abstract at most", DefaultValueFactory = _ => 256 };
var workers = new Option<int>("--concurrency") { Description = "Abstracts written at once", DefaultValueFactory = _ => 8 };
var appendix = new Command("appendix", "Batch job: one abstract per title of a TSV file, no cherry-picking, written to Markdown")
{
    titles, output, appendixModel, seed, topP, appendixTokens, workers,
};
appendix.SetAction(async r =>
{
    await using var connection = await Connect(r);
    return await AppendixCommand.RunAsync(connection.Cluster, r.GetValue(titles)!, r.GetValue(output)!, r.GetValue(appendixModel)!,
        new SamplingOptions(TopP: r.GetValue(topP), MaxTokens: r.GetValue(appendixTokens)), r.GetValue(seed), r.GetValue(workers), Console.Out);
});
root.Subcommands.Add(appendix);

try
{
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidOperationException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
