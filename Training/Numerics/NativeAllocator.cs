using System.Runtime.InteropServices;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// Tunes glibc's malloc, which libtorch's CPU allocator uses, for training's large short-lived tensors.
/// </summary>
/// <remarks>
/// By default glibc serves blocks over its dynamic mmap threshold with fresh mmap calls and gives memory at the
/// top of the heap back to the kernel, so every 26 MB logits chunk of every step costs page faults and
/// zeroing. Raising the mmap threshold to its maximum (32 MB), keeping 256 MB of padding at the top of the heap
/// and trimming only above 1 GB lets the chunks reuse the same memory: ~800 to ~970 tok/s training the tiny model
/// here, with bit-identical losses. Elsewhere (not glibc) this does nothing.
/// </remarks>
public static partial class NativeAllocator
{
    private const int TrimThreshold = -1; // M_TRIM_THRESHOLD
    private const int TopPad = -2;        // M_TOP_PAD
    private const int MmapThreshold = -3; // M_MMAP_THRESHOLD

    /// <summary>Applies the settings once per process; returns whether glibc accepted them.</summary>
    public static bool KeepLargeBlocks()
    {
        if (!OperatingSystem.IsLinux())
            return false;
        try
        {
            return mallopt(MmapThreshold, 32 * 1024 * 1024) == 1
                & mallopt(TopPad, 256 * 1024 * 1024) == 1
                & mallopt(TrimThreshold, 1024 * 1024 * 1024) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false; // not glibc (e.g. musl)
        }
    }

    /// <summary>
    /// Gives memory that libtorch freed back to the kernel (glibc's malloc_trim), for after a whole model is released.
    /// Most of a model's tensors (a few MB each) live in malloc's heap and arenas rather than in their own mmaps, and
    /// glibc returns heap memory only from its top: without this, a silo that hot-swaps GPT-2 small 20 times grew from
    /// 1.3 to 7.3 GB of resident memory though every old model had been disposed. Returns whether any was released.
    /// </summary>
    public static bool ReturnFreedMemory()
    {
        if (!OperatingSystem.IsLinux())
            return false;
        try
        {
            return malloc_trim(0) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int malloc_trim(nuint pad);

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int param, int value);
}
