using static TorchSharp.torch;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// An (in, out) weight rearranged for <see cref="SmallBatchMatMul"/>'s decode products: cut into panels of
/// <see cref="Panel"/> columns (one register tile: 4 vectors at the width the kernels run), each panel stored as its
/// own (in, panel) row-major block, the columns past the last whole panel after them as an (in, rest) block.
/// </summary>
/// <remarks>
/// <para>Why: a tile reads one tile-width strip of every weight row. In the (in, out) layout consecutive rows of the
/// strip lie a whole matrix row apart (100 KB in GPT-2's output layer), so at AVX2's width each row's 64 B is a fresh
/// page and the memory system cannot stream; in panels a tile reads one contiguous run of in x panel values. The
/// decode products of one step are read straight from memory (GPT-2 small's 248 MB of bf16 weights do not fit the
/// cache), so their speed is the speed of that read.</para>
/// <para>It is a copy, made once per weight on the first decode product and dropped when the weights change (see
/// <see cref="Model.Conv1D"/> and <see cref="Model.Gpt.InvalidateDerivedWeights"/>): the (in, out) weight stays the
/// parameter that trains, saves and serves prefills through libtorch.</para>
/// </remarks>
public sealed class PackedWeight : IDisposable
{
    private PackedWeight(Tensor elements, long inFeatures, long outFeatures, int panel)
    {
        Elements = elements;
        In = inFeatures;
        Out = outFeatures;
        Panel = panel;
    }

    /// <summary>The panels then the rest, flat: (in x out) values in the weight's dtype.</summary>
    internal Tensor Elements { get; }

    public long In { get; }

    public long Out { get; }

    /// <summary>Columns per panel: the tile width the kernels run at when it was packed.</summary>
    public int Panel { get; }

    /// <summary>Columns stored in whole panels; the rest (fewer than <see cref="Panel"/>) follow as one (in, rest) block.</summary>
    public long PanelledColumns => Out / Panel * Panel;

    public ScalarType Dtype => Elements.dtype;

    /// <summary>The panel width for this process: a tile of 4 vectors at <see cref="Simd.Width"/>.</summary>
    public static int PanelWidth => 4 * Simd.Width / 32;

    /// <summary>Packs an (in, out) weight, contiguous or not (the output layer packs wte's transposed view).</summary>
    public static PackedWeight Pack(Tensor weight)
    {
        if (weight.dim() != 2)
            throw new ArgumentException($"A weight to pack is (in, out), not ({string.Join(", ", weight.shape)})", nameof(weight));
        long inF = weight.shape[0], outF = weight.shape[1];
        int panel = PanelWidth;
        long full = outF / panel;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = weight.detach();
        var panels = w.narrow(1, 0, full * panel).reshape(inF, full, panel).permute(1, 0, 2).reshape(-1); // (full, in, panel)
        var rest = w.narrow(1, full * panel, outF - full * panel).reshape(-1);                               // (in, rest)
        var elements = cat([panels, rest]).contiguous().DetachFromDisposeScope();
        return new PackedWeight(elements, inF, outF, panel);
    }

    /// <summary>Whether this copy still stands for <paramref name="weight"/>'s shape, dtype and device at the width the
    /// kernels run now (values are the owner's to track).</summary>
    public bool Matches(Tensor weight) =>
        weight.dim() == 2 && weight.shape[0] == In && weight.shape[1] == Out && weight.dtype == Dtype
        && weight.device_type == Elements.device_type && Panel == PanelWidth;

    public void Dispose() => Elements.Dispose();
}
