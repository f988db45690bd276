using Microsoft.Extensions.FileProviders;

namespace OrleansGpt.Silo.Api;

/// <summary>
/// The web pages for people, plain static files from wwwroot/ beside the binary (no build step): the chat page at
/// "/" and the evaluation page at "/evaluate". They call the same JSON API as every other client. Pages may run only
/// this silo's own scripts and styles, and may not be framed by another site.
/// </summary>
public static class Pages
{
    public static WebApplication MapOrleansGptPages(this WebApplication app)
    {
        var files = new PhysicalFileProvider(Path.Combine(AppContext.BaseDirectory, "wwwroot"));
        app.Use(async (http, next) =>
        {
            http.Response.OnStarting(() =>
            {
                if (http.Response.ContentType?.StartsWith("text/html", StringComparison.Ordinal) == true)
                {
                    http.Response.Headers.ContentSecurityPolicy = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
                    http.Response.Headers.XContentTypeOptions = "nosniff";
                }
                return Task.CompletedTask;
            });
            await next(http);
        });
        app.UseDefaultFiles(new DefaultFilesOptions { FileProvider = files });
        app.UseStaticFiles(new StaticFileOptions { FileProvider = files });
        app.MapGet("/evaluate", () => Results.File(files.GetFileInfo("evaluate.html").PhysicalPath!, "text/html; charset=utf-8"));
        return app;
    }
}
