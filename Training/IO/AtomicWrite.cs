namespace OrleansGpt.Training.IO;

/// <summary>
/// Writes files and directories so that a crash leaves either the old version or the new one, never a
/// half-written mix: the content goes to a staging path beside the target, then a rename publishes it.
/// </summary>
public static class AtomicWrite
{
    /// <summary>Writes a file through a temporary sibling and renames it over <paramref name="path"/>.</summary>
    public static void File(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string temp = $"{full}.tmp-{Guid.NewGuid():N}";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            System.IO.File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (System.IO.File.Exists(temp))
                System.IO.File.Delete(temp);
        }
    }

    /// <summary>Writes a text file atomically.</summary>
    public static void Text(string path, string text) =>
        File(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(text); });

    /// <summary>
    /// Fills a staging directory beside <paramref name="path"/>, then swaps it in. An existing directory is
    /// renamed aside first and deleted only after the new one is in place; if the process dies between those
    /// two renames, the old version survives as <c>PATH.old-*</c>.
    /// </summary>
    public static void Directory(string path, Action<string> write)
    {
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string staging = $"{full}.tmp-{Guid.NewGuid():N}";
        System.IO.Directory.CreateDirectory(staging);
        try
        {
            write(staging);
        }
        catch
        {
            System.IO.Directory.Delete(staging, recursive: true);
            throw;
        }

        if (System.IO.Directory.Exists(full))
        {
            string old = $"{full}.old-{Guid.NewGuid():N}";
            System.IO.Directory.Move(full, old);
            System.IO.Directory.Move(staging, full);
            System.IO.Directory.Delete(old, recursive: true);
        }
        else
        {
            System.IO.Directory.Move(staging, full);
        }
    }
}
