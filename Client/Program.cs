using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OrleansGpt.Grains.Interfaces;

// Talks to a local silo (dotnet run --project Silo). The chat client comes with issue 4.
//   info SIZE@DEVICE             what a model grain serves, e.g. tiny@cpu:0
//   write USER "Title"           streams an abstract with USER's session settings
if (args is not (["info", _] or ["write", _, _]))
{
    Console.Error.WriteLine("usage: dotnet run --project Client -- info SIZE@DEVICE | write USER \"Title\"");
    return 2;
}
var builder = Host.CreateApplicationBuilder();
builder.Logging.SetMinimumLevel(LogLevel.Warning); // Orleans' start-up chatter would bury the output
builder.UseOrleansClient(client => client.UseLocalhostClustering());
using var host = builder.Build();
await host.StartAsync();
var cluster = host.Services.GetRequiredService<IClusterClient>();
try
{
    if (args[0] == "info")
    {
        var info = await cluster.GetGrain<IModelGrain>(args[1]).GetInfoAsync();
        Console.WriteLine($"{info.Key}: {info.Parameters:N0} parameters from {info.Checkpoint} ({info.Provenance})");
    }
    else
    {
        await foreach (var text in cluster.GetGrain<ISessionGrain>(args[1]).WriteAbstractAsync(args[2]))
            Console.Write(text);
        Console.WriteLine();
    }
    return 0;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
finally
{
    await host.StopAsync();
}
