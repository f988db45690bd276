using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Loop;

/// <summary>Which optimizer a run uses (<c>--optimizer</c>).</summary>
public enum OptimizerKind
{
    /// <summary>AdamW on every parameter.</summary>
    AdamW,

    /// <summary>Muon on the blocks' 2-D matrices, AdamW on the rest (<see cref="Muon"/>).</summary>
    Muon,
}

/// <summary>
/// What the trainer asks of an optimizer: clip, step and drop the gradients, and hand over the state a checkpoint
/// needs for a resumed run to continue bit for bit.
/// </summary>
public interface IOptimizer : IDisposable
{
    /// <summary>The <c>--optimizer</c> value, saved in trainer_state.json so a resume under another one is refused.</summary>
    OptimizerKind Kind { get; }

    /// <summary>Updates taken so far.</summary>
    long Steps { get; }

    /// <summary>Scales all gradients so their global L2 norm is at most <paramref name="maxNorm"/>; returns the norm before.</summary>
    double ClipGradNorm(double maxNorm);

    /// <summary>One update from the accumulated gradients; <paramref name="lr"/> is the schedule's rate at this step.</summary>
    void Step(double lr);

    /// <summary>Drops every gradient before the next accumulation.</summary>
    void ZeroGrad();

    /// <summary>The fp32 value of every parameter: the master copy where there is one, else the parameter.</summary>
    IEnumerable<(string Name, Tensor Value)> MasterWeights();

    /// <summary>The optimizer's state as named tensors, for a safetensors file beside the model.</summary>
    IEnumerable<(string Name, Tensor Tensor)> StateTensors();

    /// <summary>Restores state written by <see cref="StateTensors"/> and the step count.</summary>
    void Load(string path, long steps);

    /// <summary>One line for the start-up summary: the settings and which parameters each part updates.</summary>
    string Describe();
}

/// <summary>What AdamW and Muon keep alike: fp32 masters for a model not in fp32, and state tensors read back checked.</summary>
internal static class OptimizerState
{
    /// <summary>An fp32 copy of the parameter's master value for a parameter not in fp32; null for an fp32 one.</summary>
    public static Tensor? Master(string name, Parameter p, IReadOnlyDictionary<string, Tensor>? masters)
    {
        if (p.dtype == ScalarType.Float32)
            return null;
        if (masters is null || !masters.TryGetValue(name, out var source))
            throw new ArgumentException($"Parameter {name} is {p.dtype}; an fp32 master value is needed", nameof(masters));
        return source.detach().to(ScalarType.Float32, copy: true).DetachFromDisposeScope();
    }

    /// <summary>Copies the saved tensor <paramref name="key"/> into <paramref name="target"/>, refusing a missing one or
    /// one whose shape is not the parameter's.</summary>
    /// <param name="owner">Whose state the file should hold, for the message ("this model").</param>
    public static void Restore(SafeTensorsReader reader, string path, string key, Parameter p, Tensor target, string owner)
    {
        if (!reader.Entries.TryGetValue(key, out var entry))
            throw new InvalidDataException($"{path}: missing {key}; the optimizer state does not belong to {owner}");
        if (!entry.Shape.SequenceEqual(p.shape))
            throw new InvalidDataException($"{path}: {key} has shape {entry.ShapeText}, the parameter is [{string.Join(", ", p.shape)}]");
        using var t = reader.Read(entry);
        target.copy_(t);
    }
}

/// <summary>torch's clip_grad_norm_ over one global norm, whichever optimizer owns the parameters.</summary>
public static class GradientClipping
{
    /// <summary>Scales the gradients so their global L2 norm is at most <paramref name="maxNorm"/>, computing the norm
    /// in fp32 whatever the gradients' dtype. Returns the norm before clipping.</summary>
    public static double Clip(IEnumerable<Parameter> parameters, double maxNorm)
    {
        using var _ = no_grad();
        var gradients = parameters.Select(p => p.grad).OfType<Tensor>().ToList();
        double sumOfSquares = 0;
        foreach (var g in gradients)
        {
            if (AdamWKernel.AppliesToNorm(g))
            {
                sumOfSquares += AdamWKernel.SumOfSquares(g);
                continue;
            }
            using var g32 = g.to(ScalarType.Float32);
            using var squares = g32.square().sum();
            sumOfSquares += squares.item<float>();
        }
        double norm = Math.Sqrt(sumOfSquares);
        double coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
            foreach (var g in gradients)
                g.mul_(coefficient);
        return norm;
    }
}
