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
