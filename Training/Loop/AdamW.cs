using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Loop;

/// <summary>
/// AdamW (Loshchilov and Hutter 2019) with torch.optim.AdamW's update and defaults, written out so that its
/// state is ours to save: exp_avg and exp_avg_sq per parameter go into a safetensors file beside the model,
/// and a resumed run continues bit for bit.
/// </summary>
/// <remarks>
/// As Hugging Face's Trainer, biases and LayerNorm parameters get no weight decay; every other parameter
/// (embeddings included) does. For a model computing in bf16, the optimizer keeps an fp32 master copy of every
/// weight (mixed precision as in Micikevicius et al. 2018): gradients are read as fp32, the update is applied to
/// the master, and the model's bf16 weight is refreshed from it. Updates much smaller than a weight would
/// otherwise round away in bf16's 8-bit mantissa.
/// </remarks>
public sealed class AdamW : IOptimizer
{
    private readonly List<(string Name, Parameter Parameter, bool Decay, Tensor ExpAvg, Tensor ExpAvgSq, Tensor? Master)> _state = [];

    /// <param name="masters">fp32 values of the parameters, for a model whose parameters are not fp32; the
    /// optimizer then updates fp32 masters initialised from these. Null for an fp32 model.</param>
    public AdamW(IEnumerable<(string Name, Parameter Parameter)> parameters, double weightDecay, IReadOnlyDictionary<string, Tensor>? masters = null,
        double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8)
    {
        WeightDecay = weightDecay;
        (Beta1, Beta2, Epsilon) = (beta1, beta2, epsilon);
        foreach (var (name, p) in parameters)
        {
            var master = OptimizerState.Master(name, p, masters);
            var like = master ?? p;
            _state.Add((name, p, UsesWeightDecay(name), zeros_like(like).DetachFromDisposeScope(), zeros_like(like).DetachFromDisposeScope(), master));
        }
    }

    public IEnumerable<(string Name, Tensor Value)> MasterWeights() => _state.Select(s => (s.Name, s.Master ?? (Tensor)s.Parameter));

    public OptimizerKind Kind => OptimizerKind.AdamW;

    public double ClipGradNorm(double maxNorm) => GradientClipping.Clip(Parameters, maxNorm);

    /// <summary>The parameters this optimizer updates.</summary>
    internal IEnumerable<Parameter> Parameters => _state.Select(s => s.Parameter);

    public double WeightDecay { get; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }

    /// <summary>Updates taken so far (the bias corrections depend on it).</summary>
    public long Steps { get; private set; }

    /// <summary>Parameters with and without weight decay, for the start-up summary.</summary>
    public (long Decayed, long NotDecayed) ParameterCounts =>
        (_state.Where(s => s.Decay).Sum(s => s.Parameter.NumberOfElements), _state.Where(s => !s.Decay).Sum(s => s.Parameter.NumberOfElements));

    public string Describe()
    {
        var (decayed, notDecayed) = ParameterCounts;
        return string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"AdamW betas ({Beta1}, {Beta2}), eps {Epsilon}, weight decay {WeightDecay} on {decayed:N0} parameters (none on {notDecayed:N0} bias/LayerNorm)");
    }

    /// <summary>Biases and LayerNorm weights (ln_1, ln_2, ln_f) are not decayed.</summary>
    public static bool UsesWeightDecay(string name) =>
        !name.EndsWith(".bias", StringComparison.Ordinal) && !name.Split('.').Any(part => part.StartsWith("ln_", StringComparison.Ordinal));

    /// <summary>One update at learning rate <paramref name="lr"/> from the accumulated gradients.</summary>
    public void Step(double lr)
    {
        Steps++;
        double bias1 = 1 - Math.Pow(Beta1, Steps);
        double bias2 = 1 - Math.Pow(Beta2, Steps);
        using var _ = no_grad();
        foreach (var (_, p, decay, m, v, master) in _state)
        {
            if (p.grad is null)
                continue;
            if (AdamWKernel.Applies(p, p.grad, m, v, master))
            {
                AdamWKernel.Step(p, p.grad, m, v, master, decay: decay && WeightDecay != 0 ? (float)(1 - lr * WeightDecay) : 1f,
                    (float)Beta1, (float)Beta2, stepSize: (float)(lr / bias1), bias2Root: (float)Math.Sqrt(bias2), (float)Epsilon);
                continue;
            }
            using var scope = NewDisposeScope();
            var g = master is null ? p.grad : p.grad.to(ScalarType.Float32);
            var w = master ?? p;
            if (decay && WeightDecay != 0)
                w.mul_(1 - lr * WeightDecay);
            m.mul_(Beta1).add_(g, alpha: 1 - Beta1);
            v.mul_(Beta2).addcmul_(g, g, value: 1 - Beta2);
            var denominator = (v.sqrt() / Math.Sqrt(bias2)).add_(Epsilon);
            w.addcdiv_(m, denominator, value: -lr / bias1);
            if (master is not null)
                p.copy_(master);
        }
    }

    /// <summary>Drops every gradient before the next accumulation (torch's zero_grad(set_to_none=True)): the next backward
    /// pass then writes each gradient instead of adding it to zeros, a pass over every parameter fewer.</summary>
    public void ZeroGrad()
    {
        foreach (var s in _state)
            s.Parameter.grad = null;
    }

    /// <summary>The moments as named tensors, for a safetensors file.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> StateTensors() =>
        _state.SelectMany(s => new[] { ("exp_avg." + s.Name, s.ExpAvg), ("exp_avg_sq." + s.Name, s.ExpAvgSq) });

    /// <summary>Restores moments written by <see cref="StateTensors"/> and the step count.</summary>
    public void Load(string path, long steps)
    {
        using var reader = new SafeTensorsReader(path);
        Load(reader, path, steps);
    }

    /// <summary>Restores the moments from an open file (Muon reads its own state from the same one).</summary>
    internal void Load(SafeTensorsReader reader, string path, long steps)
    {
        using var _ = no_grad();
        foreach (var (name, p, _, m, v, _) in _state)
        {
            OptimizerState.Restore(reader, path, "exp_avg." + name, p, m, "this model");
            OptimizerState.Restore(reader, path, "exp_avg_sq." + name, p, v, "this model");
        }
        Steps = steps;
    }

    public void Dispose()
    {
        foreach (var s in _state)
        {
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
            s.Master?.Dispose();
        }
    }
}
