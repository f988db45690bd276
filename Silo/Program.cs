using Microsoft.Extensions.Hosting;
using OrleansGpt.Grains;

// A single-silo cluster on localhost: model grains serve the checkpoints under ModelHost:CheckpointDirectory,
// session grains keep their state in memory. The HTTP API comes with the rest of issue 4.
var builder = Host.CreateApplicationBuilder(args);
builder.Services.AddOrleansGptServing();
builder.UseOrleans(silo => silo
    .UseLocalhostClustering()
    .AddMemoryGrainStorage(SessionGrain.StorageName));
await builder.Build().RunAsync();
