using System.Runtime.InteropServices;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// How many threads libtorch's parallel regions use when opened from the calling thread: OpenMP's nthreads-var,
/// which belongs to each thread (unlike torch.set_num_threads, which is process-wide and also empties oneDNN's
/// cache of compiled kernels on every call).
/// </summary>
/// <remarks>
/// A decode step of a few rows runs its matrix products on <see cref="SmallBatchMatMul"/>'s threads, one per core. If
/// libtorch opened its own parallel regions in the same step (attention, casts), its OpenMP worker would spin waiting
/// for work beside those helpers, three busy threads on two cores, and the scheduler's time slices stall whichever
/// waits: GPT-2 small at one row took 43-48 ms a step instead of 11-17. So such a step limits libtorch to the calling
/// thread; its remaining ops are small. libtorch's CPU build ships GNU OpenMP (libgomp); the functions are looked up in
/// the copy the process has loaded, and where none is found the limit does nothing.
/// </remarks>
public static unsafe class OpenMpThreads
{
    private static readonly Lazy<Api?> s_api = new(Find);

    /// <summary>Whether the OpenMP runtime libtorch uses was found.</summary>
    public static bool Available => s_api.Value is not null;

    /// <summary>Until disposed, libtorch's parallel regions opened from this thread use at most <paramref name="threads"/> threads.</summary>
    public static Limit LimitTo(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        if (s_api.Value is not { } api)
            return default;
        int previous = api.GetMaxThreads();
        if (previous == threads)
            return default;
        api.SetNumThreads(threads);
        return new Limit(previous);
    }

    /// <summary>Restores the calling thread's previous count when disposed (on the same thread).</summary>
    public readonly struct Limit : IDisposable
    {
        private readonly int _previous;

        internal Limit(int previous) => _previous = previous;

        public void Dispose()
        {
            if (_previous > 0 && s_api.Value is { } api)
                api.SetNumThreads(_previous);
        }
    }

    private sealed class Api(delegate* unmanaged<int, void> set, delegate* unmanaged<int> get)
    {
        public void SetNumThreads(int n) => set(n);
        public int GetMaxThreads() => get();
    }

    /// <summary>The libgomp already mapped into this process (libtorch_cpu's), so its state, not a second copy's, is changed.</summary>
    private static Api? Find()
    {
        if (!OperatingSystem.IsLinux())
            return null;
        try
        {
            string? path = File.ReadLines("/proc/self/maps")
                .Select(line => line.IndexOf('/', StringComparison.Ordinal) is int at and >= 0 ? line[at..] : null)
                .FirstOrDefault(p => p is not null && Path.GetFileName(p).StartsWith("libgomp", StringComparison.Ordinal));
            if (path is null || !NativeLibrary.TryLoad(path, out var handle))
                return null;
            if (!NativeLibrary.TryGetExport(handle, "omp_set_num_threads", out var set)
                || !NativeLibrary.TryGetExport(handle, "omp_get_max_threads", out var get))
                return null;
            return new Api((delegate* unmanaged<int, void>)set, (delegate* unmanaged<int>)get);
        }
        catch (IOException)
        {
            return null;
        }
    }
}
