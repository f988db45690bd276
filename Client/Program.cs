using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OrleansGpt.Grains.Interfaces;

// Asks a local silo (dotnet run --project Silo) what a model grain hosts. The chat client comes with issue 4.
if (args is not ["info", var key])
{
    Console.Error.WriteLine("usage: dotnet run --project Client -- info SIZE@DEVICE   (e.g. small@cpu:0)");
    return 2;
}
var builder = Host.CreateApplicationBuilder();
builder.UseOrleansClient(client => client.UseLocalhostClustering());
using var host = builder.Build();
await host.StartAsync();
var info = await host.Services.GetRequiredService<IClusterClient>().GetGrain<IModelGrain>(key).GetInfoAsync();
Console.WriteLine($"{info.Key}: size {info.Size} on {info.Device}");
await host.StopAsync();
return 0;
