namespace OrleansGpt.Silo.Api;

/// <summary>
/// Applies OpenAI's "stop" strings to streamed text: output ends just before the first stop string, which is
/// not returned. Text that could be the start of a stop string is held back until the next piece decides it,
/// so a stop string split across two chunks is still caught and never half-sent.
/// </summary>
public sealed class StopSequences(IReadOnlyList<string> stops)
{
    private string _pending = "";

    /// <summary>Whether a stop string has been seen.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds generated text; returns the text that may be sent now.</summary>
    public string Push(string text)
    {
        if (Stopped) return "";
        _pending += text;
        int cut = -1;
        foreach (var stop in stops)
        {
            int at = _pending.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        if (cut >= 0)
        {
            Stopped = true;
            string before = _pending[..cut];
            _pending = "";
            return before;
        }
        int hold = 0;
        foreach (var stop in stops)
            for (int length = Math.Min(stop.Length - 1, _pending.Length); length > hold; length--)
                if (_pending.EndsWith(stop[..length], StringComparison.Ordinal)) { hold = length; break; }
        string ready = _pending[..^hold];
        _pending = _pending[^hold..];
        return ready;
    }

    /// <summary>The held-back text, once generation has ended without a stop string.</summary>
    public string Flush()
    {
        string rest = Stopped ? "" : _pending;
        _pending = "";
        return rest;
    }
}
