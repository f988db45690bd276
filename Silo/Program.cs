using Orleans.Dashboard;
using OrleansGpt.Grains;
using OrleansGpt.Silo;
using OrleansGpt.Silo.Api;

// A single-silo cluster on localhost with the HTTP API (http://127.0.0.1:5080): model grains serve the
// checkpoints under ModelHost:CheckpointDirectory from the devices in ModelHost:Devices, session grains keep their state in memory, /metrics serves
// Prometheus text and /dashboard the Orleans Dashboard.
var builder = WebApplication.CreateBuilder(args);
builder.Services.AddOrleansGptApi();
builder.Services.AddHostedService<ModelPreloader>();
builder.UseOrleans(silo => silo
    .UseLocalhostClustering()
    .AddOrleansGptServing()
    .AddMemoryGrainStorage(SessionGrain.StorageName)
    .AddDashboard());
var app = builder.Build();
app.MapOrleansGptApi();
app.MapOrleansDashboard("/dashboard");
app.Run();
