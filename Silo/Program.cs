using Orleans.Dashboard;
using OrleansGpt.Grains;
using OrleansGpt.Silo;
using OrleansGpt.Silo.Api;

// A silo on localhost with the HTTP API (http://127.0.0.1:5080). Alone it is a single-silo cluster; more silos
// join it with the "Cluster" settings (see deploy/README.md). Model grains serve the checkpoints under
// ModelHost:CheckpointDirectory from the devices in ModelHost:Devices, session grains keep their state in
// memory, /metrics serves Prometheus text and /dashboard the Orleans Dashboard.
// Settings come from the appsettings.json beside the binary; relative paths in them are relative to where the
// silo was started.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddOrleansGptApi();
builder.Services.AddHostedService<ModelPreloader>();
var cluster = LocalClusterOptions.From(builder.Configuration);
builder.UseOrleans(silo => silo
    .UseLocalhostClustering(cluster.SiloPort, cluster.GatewayPort, cluster.PrimarySilo)
    .AddOrleansGptServing()
    .AddMemoryGrainStorage(SessionGrain.StorageName)
    .AddDashboard());
var app = builder.Build();
app.MapOrleansGptApi();
app.MapOrleansDashboard("/dashboard");
app.Run();
