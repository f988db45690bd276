using System.Runtime.Intrinsics;

namespace OrleansGpt.Training.Numerics;

/// <summary>Reductions across the lanes of a vector that .NET's Vector512 lacks.</summary>
internal static class Horizontal
{
    /// <summary>The largest of the 16 lanes (MathF.Max's: a NaN lane gives NaN).</summary>
    public static float Max(Vector512<float> v)
    {
        float max = float.NegativeInfinity;
        for (int i = 0; i < 16; i++) max = MathF.Max(max, v.GetElement(i));
        return max;
    }
}
