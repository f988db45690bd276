using OrleansGpt.Grains;
using OrleansGpt.Silo;
using OrleansGpt.Silo.Api;

// A single-silo cluster on localhost with the HTTP API: model grains serve the checkpoints under
// ModelHost:CheckpointDirectory, session grains keep their state in memory.
var builder = WebApplication.CreateBuilder(args);
builder.Services.AddOrleansGptServing();
builder.Services.AddHostedService<ModelPreloader>();
builder.UseOrleans(silo => silo
    .UseLocalhostClustering()
    .AddMemoryGrainStorage(SessionGrain.StorageName));
var app = builder.Build();
app.MapOrleansGptApi();
app.Run();
