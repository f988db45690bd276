namespace OrleansGpt.Silo.Api;

/// <summary>
/// The last line of the API's error handling: an exception no endpoint turned into an error of its own becomes a
/// 500 with OpenAI's error body and is logged with its stack, never an empty 500. The body names only the kind of
/// failure, since an internal message may say more about the server than a caller should learn.
/// </summary>
public static class UnexpectedErrors
{
    public static TBuilder ReportUnexpectedErrors<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            try
            {
                return await next(context);
            }
            catch (Exception e) when (!http.RequestAborted.IsCancellationRequested)
            {
                http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(UnexpectedErrors))
                    .LogError(e, "{Method} {Path} failed", http.Request.Method, http.Request.Path);
                if (http.Response.HasStarted)
                    throw; // too late for a status: the connection ends
                return OpenAiApi.ErrorResult(StatusCodes.Status500InternalServerError,
                    $"The silo failed while answering ({e.GetType().Name}); the details are in its log", null, "internal_error", "server_error");
            }
        });
}
