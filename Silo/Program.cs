using Microsoft.Extensions.Hosting;

// A single-silo cluster on localhost with in-memory state; serving endpoints come with issue 4.
var builder = Host.CreateApplicationBuilder(args);
builder.UseOrleans(silo => silo.UseLocalhostClustering());
await builder.Build().RunAsync();
