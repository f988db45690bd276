namespace OrleansGpt.Silo.Api;

/// <summary>
/// POST and PATCH endpoints take JSON only. A web page on another site may make a browser send text/plain or form
/// posts (or a bare POST) to a silo on 127.0.0.1 without asking anyone; it cannot send application/json without a
/// CORS preflight, which this API never grants. So requiring the JSON content type closes cross-site requests to
/// the whole API, operator endpoints included.
/// </summary>
public static class JsonBodies
{
    public static TBuilder RequireJsonBodies<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.AddEndpointFilter(async (context, next) =>
        {
            var request = context.HttpContext.Request;
            if ((HttpMethods.IsPost(request.Method) || HttpMethods.IsPatch(request.Method) || HttpMethods.IsPut(request.Method)) && !request.HasJsonContentType())
                return OpenAiApi.ErrorResult(StatusCodes.Status415UnsupportedMediaType,
                    "Send the request as JSON: Content-Type: application/json (an empty body is {})", null, "unsupported_media_type");
            return await next(context);
        });
}
