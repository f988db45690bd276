using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>Where a tensor's elements are, for the kernels that read and write them from several threads.</summary>
internal static unsafe class TensorMemory
{
    /// <summary>The address of the first element of a contiguous CPU tensor. libtorch's memory does not move, so the
    /// address stays good while the tensor is alive (keep it so, e.g. with GC.KeepAlive, until the kernel returns).</summary>
    public static nint Address(Tensor contiguous)
    {
        fixed (byte* p = contiguous.bytes) return (nint)p;
    }
}
