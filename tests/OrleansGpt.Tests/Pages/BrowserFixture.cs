using Microsoft.Playwright;
using OrleansGpt.Grains;
using OrleansGpt.Tests.Grains;

namespace OrleansGpt.Tests.Pages;

/// <summary>
/// A silo serving the pages (in process, on a free 127.0.0.1 port) with two models, "tiny" (fast) and "small" (here 4
/// layers, 256 wide: a 1,000-token abstract takes seconds, so Stop has something to stop), evaluation data prepared
/// in a temporary directory, and Debian's chromium driven by Playwright (its own browser download cannot work here).
/// </summary>
public sealed class BrowserFixture : IAsyncLifetime
{
    private TestModels.TempDirectory? _data;
    private IPlaywright? _playwright;

    public ServingCluster Serving { get; private set; } = null!;

    public IBrowser Browser { get; private set; } = null!;

    public string BaseUrl => Serving.Api.BaseAddress!.ToString().TrimEnd('/');

    /// <summary>Where tests write screenshots: TestResults/screenshots under the repository (ignored by git).</summary>
    public static string Screenshots { get; } = Path.Combine(RepositoryRoot(), "TestResults", "screenshots");

    /// <summary>The chromium executable: $CHROMIUM_PATH, else Debian's package.</summary>
    public static string Chromium => Environment.GetEnvironmentVariable("CHROMIUM_PATH") is { Length: > 0 } path ? path : "/usr/bin/chromium";

    public async Task InitializeAsync()
    {
        if (!File.Exists(Chromium))
            throw new InvalidOperationException($"No chromium at {Chromium}: apt-get install -y chromium (or set CHROMIUM_PATH); .ci/run installs it");
        _data = TestModels.TempDir();
        string prepared = TestData.Prepared(_data.Path, papers: 120, words: 40);
        var slow = TestModels.TinyGpt2Vocabulary with { BlockSize = 1024, Layers = 4, Heads = 4, Embedding = 256 };
        Serving = await ServingCluster.StartAsync([("tiny", TestModels.TinyGpt2Vocabulary, 21, "page test model"), ("small", slow, 22, "a slower model (named small)")], (_, o) =>
        {
            o.ShareDevices = true;
            o.Slots = 4;
            o.MaxNewTokens = 1000;
            o.DataDirectory = _data.Path;
        }, evaluation: e =>
        {
            e.Data = Path.GetFileName(prepared);
            e.MaxTokens = 40;
        });
        _playwright = await Playwright.CreateAsync();
        Browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions { ExecutablePath = Chromium, Headless = true, Args = ["--no-sandbox"] });
        Directory.CreateDirectory(Screenshots);
    }

    /// <summary>A fresh browser context (its own localStorage: a new user) with a page that records console errors.</summary>
    public async Task<(IBrowserContext Context, IPage Page, List<string> Errors)> NewPageAsync(int width = 1280, int height = 900)
    {
        var context = await Browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = width, Height = height } });
        var page = await context.NewPageAsync();
        var errors = new List<string>();
        page.Console += (_, message) => { if (message.Type == "error") errors.Add(message.Text); };
        page.PageError += (_, error) => errors.Add(error);
        page.Response += (_, response) => { if (response.Status >= 400) errors.Add($"{response.Status} {response.Request.Method} {response.Url}"); };
        page.SetDefaultTimeout(30_000);
        return (context, page, errors);
    }

    public async Task DisposeAsync()
    {
        if (Browser is not null) await Browser.DisposeAsync();
        _playwright?.Dispose();
        if (Serving is not null) await Serving.DisposeAsync();
        _data?.Dispose();
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "OrleansGpt.sln")))
                return dir.FullName;
        return AppContext.BaseDirectory;
    }
}
