using Orleans.Dashboard;
using OrleansGpt.Grains;
using OrleansGpt.Hosting;
using OrleansGpt.Silo;
using OrleansGpt.Silo.Api;

// A silo with the HTTP API (http://127.0.0.1:5080). The "Cluster" settings choose how it finds the others:
// localhost (the default: one machine, state in memory) or redis (silos on several machines, sessions, fine-tunes
// and the checkpoint registry kept in Redis); see deploy/README.md. Model grains serve the active version of each
// size from the checkpoint store on the devices in ModelHost:Devices; /metrics serves Prometheus text and
// /dashboard the Orleans Dashboard (to callers on this machine, unless Operator:Dashboard is false).
// Settings come from the appsettings.json beside the binary; relative paths in them are relative to where the
// silo was started.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddOrleansGptApi();
builder.Services.AddHostedService<ModelPreloader>();
try
{
    builder.UseOrleans(silo =>
    {
        silo.AddOrleansGptCluster(builder.Configuration).AddOrleansGptServing();
        if (builder.Configuration.GetValue("Operator:Dashboard", true))
            silo.AddDashboard();
    });
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException)
{
    // A setting that does not fit (Redis unreachable, a bad port or device list) stops the silo here, by name.
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}
var app = builder.Build();
app.MapOrleansGptPages();
app.MapOrleansGptApi();
app.MapOperatorDashboard("/dashboard");
app.Run();
return 0;
