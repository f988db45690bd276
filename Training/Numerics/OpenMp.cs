namespace OrleansGpt.Training.Numerics;

/// <summary>
/// libtorch's OpenMP runtime (GNU libgomp on Linux), called directly so that our own kernels run on the very worker
/// threads libtorch's parallel ops use.
/// </summary>
/// <remarks>
/// A decode step interleaves libtorch's ops with <see cref="SmallBatchMatMul"/>'s products. Products split over threads
/// of our own ran beside libgomp's worker, which spins for a while after each of libtorch's parallel regions waiting for
/// the next: three busy threads on two cores, and the scheduler's time slices stalled whichever waited (GPT-2 small at
/// one row: 43-48 ms a step instead of 11-17). On libgomp's own team there is one thread per core, whoever opens the
/// region, and a spinning worker takes our work as promptly as libtorch's. The functions are looked up in the libgomp
/// the process has already loaded (libtorch_cpu's); where there is none, <see cref="Parallel"/> runs on the calling
/// thread alone.
/// </remarks>
public static unsafe class OpenMp
{
    private static readonly Lazy<Api?> s_api = new(Find);

    /// <summary>Whether libtorch's OpenMP runtime was found (after libtorch is loaded).</summary>
    public static bool Available => s_api.Value is not null;

    /// <summary>This thread's number in the running team (0 outside a parallel region).</summary>
    public static int ThreadNumber => s_api.Value is { } api ? api.ThreadNumber() : 0;

    /// <summary>Threads in the running team (1 outside a parallel region).</summary>
    public static int TeamSize => s_api.Value is { } api ? api.TeamSize() : 1;

    /// <summary>
    /// Runs <paramref name="body"/>(<paramref name="state"/>) on a team of <paramref name="threads"/> threads, the calling
    /// thread as number 0, and returns when every one has returned. The body must not throw (it is called from native code).
    /// </summary>
    public static void Parallel(delegate* unmanaged<void*, void> body, void* state, int threads)
    {
        if (threads <= 1 || s_api.Value is not { } api)
            body(state);
        else
            api.Parallel(body, state, (uint)threads);
    }

    /// <summary>
    /// Ends the OpenMP worker threads libgomp keeps for the calling thread, if it has any (the next parallel region on
    /// this thread starts them again). Call it on a thread that is done with libtorch for a while, such as one that
    /// has just loaded a model for an engine to serve.
    /// </summary>
    /// <remarks>libgomp lets a team's workers spin between parallel regions only while it manages no more threads than
    /// there are CPUs; past that they sleep after ~100 spins, and every op of a decode step waits for them to wake. Each
    /// thread that ever ran a parallel region keeps its workers, and counts, until it exits: a model built on the main
    /// thread and then served from the engine's own thread put the engine's team over the count on two cores (the same
    /// fixed batch of 8 on a second thread: 18.3 ms a step instead of 15.3).</remarks>
    public static void ReleaseThisThreadsWorkers()
    {
        if (s_api.Value is { } api)
            api.Pause();
    }

    /// <summary>
    /// Runs <paramref name="body"/>(thread number, team size) on a team of <paramref name="threads"/> of libtorch's
    /// OpenMP threads, the caller as number 0, and returns when all have; the first exception any of them threw is
    /// rethrown here. For managed work between libtorch's ops: on these threads it does not compete with an OpenMP
    /// worker spinning for libtorch's next region, as work on .NET's thread pool does.
    /// </summary>
    public static void ForEachThread(Action<int, int> body, int threads)
    {
        var work = new ManagedWork(body);
        var handle = System.Runtime.InteropServices.GCHandle.Alloc(work);
        try
        {
            Parallel(&RunManaged, (void*)System.Runtime.InteropServices.GCHandle.ToIntPtr(handle), threads);
        }
        finally
        {
            handle.Free();
        }
        if (work.Failure is { } failure)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
    }

    /// <summary>
    /// Runs <paramref name="body"/>(start, end) over [0, <paramref name="count"/>) split into one range per thread of the
    /// team (<see cref="ForEachThread"/>), each a whole number of 16-element vectors but the last, which also takes the
    /// ragged end; under <paramref name="perThread"/> elements a thread, fewer threads (down to the caller alone).
    /// For elementwise kernels.
    /// </summary>
    public static void ForRanges(long count, Action<long, long> body, long perThread = 65536)
    {
        int threads = (int)Math.Clamp(count / perThread, 1, TorchSharp.torch.get_num_threads());
        if (threads == 1)
        {
            body(0, count);
            return;
        }
        ForEachThread((part, parts) =>
        {
            long vectors = count / 16;
            long start = vectors * part / parts * 16, end = part == parts - 1 ? count : vectors * (part + 1) / parts * 16;
            body(start, end);
        }, threads);
    }

    [System.Runtime.InteropServices.UnmanagedCallersOnly]
    private static void RunManaged(void* state)
    {
        var work = (ManagedWork)System.Runtime.InteropServices.GCHandle.FromIntPtr((nint)state).Target!;
        try
        {
            work.Body(ThreadNumber, TeamSize);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref work.Failure, e, null); // nothing may unwind into native code
        }
    }

    private sealed class ManagedWork(Action<int, int> body)
    {
        public readonly Action<int, int> Body = body;
        public Exception? Failure;
    }

    private sealed class Api(
        delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> parallel,
        delegate* unmanaged<int> threadNumber,
        delegate* unmanaged<int> teamSize,
        delegate* unmanaged<int, int> pauseAll)
    {
        // OpenMP 5.0's omp_pause_resource_all: libgomp frees the calling thread's pool of workers (gomp_pause_host).
        public void Pause()
        {
            if (pauseAll is not null)
                _ = pauseAll(1); // omp_pause_soft
        }

        // GCC's entry point for `#pragma omp parallel`: GOMP_parallel(fn, data, num_threads, flags).
        public void Parallel(delegate* unmanaged<void*, void> body, void* state, uint threads) => parallel(body, state, threads, 0);
        public int ThreadNumber() => threadNumber();
        public int TeamSize() => teamSize();
    }

    /// <summary>The libgomp already mapped into this process, so its thread pool, not a second copy's, is used.</summary>
    private static Api? Find()
    {
        if (!OperatingSystem.IsLinux())
            return null;
        _ = TorchSharp.torch.get_num_threads(); // loads libtorch (and its libgomp) if nothing has yet
        try
        {
            string? path = File.ReadLines("/proc/self/maps")
                .Select(line => line.IndexOf('/', StringComparison.Ordinal) is int at and >= 0 ? line[at..] : null)
                .FirstOrDefault(p => p is not null && Path.GetFileName(p).StartsWith("libgomp", StringComparison.Ordinal));
            if (path is null || !System.Runtime.InteropServices.NativeLibrary.TryLoad(path, out var handle))
                return null;
            var lib = System.Runtime.InteropServices.NativeLibrary.TryGetExport;
            if (!lib(handle, "GOMP_parallel", out var parallel)
                || !lib(handle, "omp_get_thread_num", out var threadNumber)
                || !lib(handle, "omp_get_num_threads", out var teamSize))
                return null;
            lib(handle, "omp_pause_resource_all", out var pauseAll); // OpenMP 5.0; absent from older runtimes
            return new Api(
                (delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void>)parallel,
                (delegate* unmanaged<int>)threadNumber,
                (delegate* unmanaged<int>)teamSize,
                (delegate* unmanaged<int, int>)pauseAll);
        }
        catch (IOException)
        {
            return null;
        }
    }
}
