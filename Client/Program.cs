using System.CommandLine;
using OrleansGpt.Client;
using OrleansGpt.Grains.Interfaces;

// The Orleans client of a cluster (dotnet run --project Silo). It references Grains.Interfaces and the cluster
// settings, never libtorch. Which cluster: --redis (or Cluster__Provider=redis, Cluster__Redis=...) finds the gateways
// in the membership table; otherwise the local silo's gateway (--gateway-port, default 30000).
var root = new RootCommand("OrleansGpt client: chat for abstracts, model info and load bench against a cluster.");
var redis = new Option<string?>("--redis") { Description = "The cluster's Redis (host:port): gateways come from its membership table", Recursive = true };
var gatewayPort = new Option<int?>("--gateway-port") { Description = "Without Redis: the local silo's gateway port (default 30000)", Recursive = true };
var gateways = new Option<string[]>("--gateway") { Description = "Use only these gateways (HOST:PORT, repeatable) instead of every one in membership", Recursive = true };
root.Options.Add(redis);
root.Options.Add(gatewayPort);
root.Options.Add(gateways);
Task<ClusterConnection> Connect(ParseResult r)
{
    var overrides = new Dictionary<string, string?>();
    if (r.GetValue(redis) is { Length: > 0 } connection)
        (overrides["Cluster:Provider"], overrides["Cluster:Redis"]) = ("redis", connection);
    if (r.GetValue(gatewayPort) is int port)
        overrides["Cluster:GatewayPort"] = port.ToString(System.Globalization.CultureInfo.InvariantCulture);
    var pinned = r.GetValue(gateways) ?? [];
    for (int i = 0; i < pinned.Length; i++)
        overrides[$"Cluster:Gateways:{i}"] = pinned[i];
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
        Console.WriteLine($"{i.Key} on silo {i.Silo}: version {i.Version}, {i.Parameters:N0} parameters ({i.Provenance})");
    }
    return 0;
});
root.Subcommands.Add(info);

var concurrency = new Option<string>("--concurrency") { Description = "Concurrent workers, comma-separated", DefaultValueFactory = _ => "1,8,32,64" };
var requests = new Option<int>("--requests") { Description = "Requests per concurrency level", DefaultValueFactory = _ => 64 };
var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens generated per request", DefaultValueFactory = _ => 128 };
var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length (random token ids)", DefaultValueFactory = _ => 32 };
var model = new Option<string>("--model") { Description = "Checkpoint size to load", DefaultValueFactory = _ => "small" };
var clusterFaults = new Option<bool>("--cluster-faults") { Description = "Instead: steady load while a version is promoted, a silo killed and restarted (first --concurrency value)" };
var promoteVersion = new Option<string?>("--promote") { Description = "--cluster-faults: the version to promote under load" };
var killCommand = new Option<string?>("--kill") { Description = "--cluster-faults: shell command that kills a silo, e.g. 'deploy/local-cluster.sh kill c'" };
var restartCommand = new Option<string?>("--restart") { Description = "--cluster-faults: shell command that starts it again" };
var churn = new Option<bool>("--churn") { Description = "Instead: callers who leave (queued or mid-stream) while others arrive; counts false busy answers (use a concurrency of at most slots + queue)" };
var bench = new Command("bench", "Load a running silo: aggregate tok/s, req/s, time to first token and inter-token latency p50/p99, failures")
{
    concurrency, requests, maxTokens, promptTokens, model, clusterFaults, promoteVersion, killCommand, restartCommand, churn,
};
bench.SetAction(async r =>
{
    await using var connection = await Connect(r);
    int[] levels = [.. r.GetValue(concurrency)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(l => int.Parse(l, System.Globalization.CultureInfo.InvariantCulture))];
    if (r.GetValue(churn))
        return await new ChurnBench(connection.Cluster, r.GetValue(model)!, levels[0], r.GetValue(requests), r.GetValue(maxTokens), Console.Out).RunAsync();
    if (r.GetValue(clusterFaults))
        return await new ClusterFaultBench(connection.Cluster, r.GetValue(model)!, levels[0],
            r.GetValue(maxTokens), Console.Out).RunAsync(r.GetValue(promoteVersion), r.GetValue(killCommand), r.GetValue(restartCommand));
    return await BenchCommand.RunAsync(connection, levels,
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

// ops: the operator's commands over a silo's HTTP operator API, with the operator key.
var silo = new Option<string>("--silo") { Description = "A silo's HTTP address", DefaultValueFactory = _ => "http://127.0.0.1:5080", Recursive = true };
var operatorKey = new Option<string?>("--key") { Description = "The operator key (default: $ORLEANSGPT_OPERATOR_KEY)", Recursive = true };
var ops = new Command("ops", "Operate the cluster: status, versions, promote, rollback, fine-tune") { silo, operatorKey };
OpsCommand Ops(ParseResult r) => new(new Uri(r.GetValue(silo)!), r.GetValue(operatorKey) ?? Environment.GetEnvironmentVariable("ORLEANSGPT_OPERATOR_KEY"), Console.Out);
var sizeArgument = new Argument<string>("size") { Description = "A model size: tiny, small, ..." };
var versionArgument = new Argument<string>("version") { Description = "A version id from 'ops versions SIZE'" };
var status = new Command("status", "Silos, replicas with their version, queue depth and tokens/s, each size's active version");
status.SetAction(async r => { using var o = Ops(r); return await o.StatusAsync(); });
var versions = new Command("versions", "The versions of a size in the checkpoint registry, the active one starred") { sizeArgument };
versions.SetAction(async r => { using var o = Ops(r); return await o.VersionsAsync(r.GetValue(sizeArgument)!); });
var promote = new Command("promote", "Load a version on every replica, then switch (requests finish on the version they started with)") { sizeArgument, versionArgument };
promote.SetAction(async r => { using var o = Ops(r); return await o.PromoteAsync(r.GetValue(sizeArgument)!, r.GetValue(versionArgument)!); });
var rollback = new Command("rollback", "Promote the version that was active before the current one") { sizeArgument };
rollback.SetAction(async r => { using var o = Ops(r); return await o.RollbackAsync(r.GetValue(sizeArgument)!); });
var action = new Argument<string>("action") { Description = "start, status, history, cancel or resume" };
var data = new Option<string?>("--data") { Description = "start: prepared data directory, relative to the training silo's ModelHost:DataDirectory" };
var steps = new Option<long?>("--max-steps") { Description = "start: optimizer steps (default: 3 epochs)" };
var lr = new Option<double?>("--lr") { Description = "start: learning rate (default 5e-5)" };
var noPromote = new Option<bool>("--no-promote") { Description = "start: publish the result without promoting it" };
var fineTune = new Command("fine-tune", "Fine-tune a size on a training silo: start, status, history, cancel, resume") { action, sizeArgument, data, steps, lr, noPromote };
fineTune.SetAction(async r =>
{
    using var o = Ops(r);
    string size = r.GetValue(sizeArgument)!;
    if (r.GetValue(action) != "start")
        return await o.FineTuneAsync(size, r.GetValue(action)!);
    string directory = r.GetValue(data) ?? throw new ArgumentException("fine-tune start needs --data DIR (a directory written by the Training project's prepare command)");
    // As given: a relative path means relative to the training silo's ModelHost:DataDirectory, not to this shell.
    return await o.FineTuneStartAsync(new { model = size, data_directory = directory, max_steps = r.GetValue(steps), learning_rate = r.GetValue(lr), promote = !r.GetValue(noPromote) });
});
var times = new Option<int>("--times") { Description = "Promotions to make", DefaultValueFactory = _ => 20 };
var pid = new Option<int>("--pid") { Description = "The silo's process id on this machine (its resident memory is read from /proc)", Required = true };
var reloadSoak = new Command("reload-soak", "Promote a size's two newest versions in turn and print the silo's memory after each (does memory come back?)") { sizeArgument, times, pid };
reloadSoak.SetAction(async r => { using var o = Ops(r); return await o.ReloadSoakAsync(r.GetValue(sizeArgument)!, r.GetValue(times), r.GetValue(pid)); });
foreach (var command in new[] { status, versions, promote, rollback, fineTune, reloadSoak })
    ops.Subcommands.Add(command);
root.Subcommands.Add(ops);

try
{
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidOperationException or HttpRequestException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
