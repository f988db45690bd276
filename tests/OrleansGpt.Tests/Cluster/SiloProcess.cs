using System.Diagnostics;
using System.Net.Http.Json;
using System.Text;

namespace OrleansGpt.Tests.Cluster;

/// <summary>
/// One real silo: `dotnet OrleansGpt.Silo.dll` (copied into the test output) with its own node name, ports on
/// 127.0.0.1 and settings, its output kept in a log file. <see cref="Kill"/> loses it the way production does
/// (SIGKILL, no shutdown code runs); <see cref="StopAsync"/> is an operator's orderly stop (SIGTERM).
/// </summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly IReadOnlyDictionary<string, string> _settings;
    private readonly string _log;
    private Process? _process;

    public SiloProcess(string node, IReadOnlyDictionary<string, string> settings, string logDirectory)
    {
        Node = node;
        _settings = settings;
        _log = Path.Combine(logDirectory, $"silo-{node}.log");
        SiloPort = FreePorts.Next();
        GatewayPort = FreePorts.Next();
        HttpPort = FreePorts.Next();
        Http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{HttpPort}"), Timeout = TimeSpan.FromSeconds(60) };
        if (settings.TryGetValue("Operator:ApiKey", out var key))
            Http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
    }

    public string Node { get; }

    public int SiloPort { get; }

    public int GatewayPort { get; }

    public int HttpPort { get; }

    /// <summary>A client for this silo's HTTP API.</summary>
    public HttpClient Http { get; }

    public bool Running => _process is { HasExited: false };

    /// <summary>Starts the process (same ports and node name on every start, as a restarted machine would).</summary>
    public void Start()
    {
        if (Running)
            throw new InvalidOperationException($"silo {Node} is already running");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = AppContext.BaseDirectory };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "OrleansGpt.Silo.dll"));
        var args = new Dictionary<string, string>(_settings)
        {
            ["ModelHost:Node"] = Node,
            ["Cluster:SiloPort"] = SiloPort.ToString(),
            ["Cluster:GatewayPort"] = GatewayPort.ToString(),
            ["Urls"] = $"http://127.0.0.1:{HttpPort}",
        };
        foreach (var (key, value) in args)
            start.ArgumentList.Add($"--{key}={value}");
        var log = new StreamWriter(_log, append: true) { AutoFlush = true };
        log.WriteLine($"--- start {DateTime.UtcNow:O}");
        _process = Process.Start(start)!;
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Waits until /healthz answers 200 (a model is loaded), failing with the log's end if the process exits.</summary>
    public async Task WaitHealthyAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (!Running)
            {
                // The output handlers may still be writing the last lines (the reason it stopped): the parameterless
                // wait returns once both redirected streams have reached their end.
                _process?.WaitForExit();
                throw new InvalidOperationException($"silo {Node} exited with {_process?.ExitCode}:\n{LogTail()}");
            }
            try
            {
                using var response = await Http.GetAsync("/healthz");
                if (response.IsSuccessStatusCode)
                    return;
            }
            catch (HttpRequestException)
            {
            }
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"silo {Node} was not healthy after {timeout.TotalSeconds} s:\n{LogTail()}");
            await Task.Delay(200);
        }
    }

    /// <summary>kill -9: the process ends at once, no shutdown code runs, its sockets close.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill(); // SIGKILL on Linux
            p.WaitForExit(10_000);
        }
    }

    /// <summary>An orderly stop (SIGTERM, as systemd or Kubernetes sends), killed if it takes over 30 s.</summary>
    public async Task StopAsync()
    {
        if (_process is not { HasExited: false } p)
            return;
        using (var kill = Process.Start("kill", ["-TERM", p.Id.ToString()]))
            await kill.WaitForExitAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await p.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
        }
    }

    /// <summary>The last lines of this silo's log, for failure messages.</summary>
    public string LogTail(int lines = 40)
    {
        try
        {
            using var stream = new FileStream(_log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            var all = reader.ReadToEnd().Split('\n');
            return string.Join('\n', all.TakeLast(lines));
        }
        catch (IOException)
        {
            return "(no log)";
        }
    }

    public async Task<T> GetAsync<T>(string path) => (await Http.GetFromJsonAsync<T>(path))!;

    public ValueTask DisposeAsync()
    {
        Kill();
        _process?.Dispose();
        Http.Dispose();
        return ValueTask.CompletedTask;
    }
}
