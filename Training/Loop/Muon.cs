using System.Globalization;
using OrleansGpt.Training.Model;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Loop;

/// <summary>
/// Muon (Keller Jordan 2024, modded-nanogpt; Liu et al. 2025, "Muon is Scalable for LLM Training"): SGD with Nesterov
/// momentum whose update is orthogonalised before it is applied, for the transformer blocks' 2-D matrices; AdamW for
/// everything else (token and position embeddings, which are also the tied output layer, biases and LayerNorms).
/// </summary>
/// <remarks>
/// Per hidden matrix W with gradient G, as torch.optim.Muon (Nesterov on):
/// <code>
///   B  = momentum B + (1 - momentum) G          (buf.lerp_(G, 1 - momentum))
///   U  = (1 - momentum) G + momentum B          (G.lerp(B, momentum): Nesterov's look-ahead)
///   O  = NewtonSchulz5(U)                        (about U's polar factor: every singular value near 1)
///   W *= 1 - lr_muon weightDecay;  W -= lr_muon sqrt(max(1, out / in)) O
/// </code>
/// The quintic's coefficients (3.4445, -4.7750, 2.0315) and its five steps are Keller Jordan's: they push singular
/// values into about [0.7, 1.2] fast rather than exactly to 1, which is all the update needs. The scale
/// sqrt(max(1, out / in)) is torch's "original" adjustment. c_attn holds the query, key and value projections side by
/// side (in, 3C); each is orthogonalised on its own, as modded-nanogpt's separate q, k and v matrices are.
/// The iteration runs in fp32 (torch runs it in bf16 on GPUs): a bf16 product is emulated on CPUs without bf16
/// instructions, and the matrices here are small next to a step's forward and backward passes.
/// The rate follows the run's schedule: at a step where the schedule gives <c>lr</c>, Muon uses
/// <c>MuonLr * lr / peak</c>, so warm-up and decay shape both parts alike. For a bf16 model the hidden matrices keep
/// fp32 masters as AdamW's parameters do. No weight changes layout: checkpoints stay Hugging Face GPT-2 files.
/// </remarks>
public sealed class Muon : IOptimizer
{
    public const double DefaultLearningRate = 0.02;
    public const double DefaultMomentum = 0.95;
    public const int NewtonSchulzSteps = 5;
    public static readonly (double A, double B, double C) NewtonSchulzCoefficients = (3.4445, -4.7750, 2.0315);
    private const double NormEpsilon = 1e-7;
    private const string StatePrefix = "muon_momentum.";

    private readonly List<Matrix> _matrices = [];
    private readonly AdamW _rest;

    /// <summary>A hidden matrix: its Conv1D weight (in, out), how many side-by-side blocks it holds, Muon's momentum
    /// buffer and, for a model not in fp32, the fp32 master.</summary>
    private sealed record Matrix(string Name, Parameter Parameter, int Blocks, Tensor Momentum, Tensor? Master);

    /// <param name="learningRate">Muon's peak rate (<c>--muon-lr</c>).</param>
    /// <param name="peakLearningRate">The schedule's peak (<c>--lr</c>, AdamW's rate): Muon's rate is scaled by the
    /// schedule's share of it.</param>
    /// <param name="masters">fp32 values of the parameters for a model not in fp32, as <see cref="AdamW"/> takes them.</param>
    public Muon(IEnumerable<(string Name, Parameter Parameter)> parameters, double learningRate, double momentum, double peakLearningRate,
        double weightDecay, IReadOnlyDictionary<string, Tensor>? masters = null, double beta2 = 0.999)
    {
        if (!(learningRate > 0)) throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "--muon-lr must be positive");
        if (!(momentum is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(momentum), momentum, "--muon-momentum must be in [0, 1)");
        if (!(peakLearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(peakLearningRate), peakLearningRate, "--lr must be positive");
        (LearningRate, Momentum, PeakLearningRate, WeightDecay) = (learningRate, momentum, peakLearningRate, weightDecay);
        var rest = new List<(string, Parameter)>();
        foreach (var (name, p) in parameters)
        {
            if (!TakesMatrix(name, p))
            {
                rest.Add((name, p));
                continue;
            }
            int blocks = BlocksOf(name);
            if (p.shape[1] % blocks != 0)
                throw new ArgumentException($"{name} is [{string.Join(", ", p.shape)}]; its columns do not split into {blocks} blocks", nameof(parameters));
            var master = OptimizerState.Master(name, p, masters);
            _matrices.Add(new Matrix(name, p, blocks, zeros_like(master ?? p, dtype: ScalarType.Float32).DetachFromDisposeScope(), master));
        }
        _rest = new AdamW(rest, weightDecay, masters, beta2: beta2);
    }

    /// <summary>Muon takes the blocks' 2-D weights (attention and MLP projections); embeddings, biases and LayerNorms
    /// go to AdamW. wte is also the output layer, and an embedding's rows are not a linear map to orthogonalise.</summary>
    public static bool TakesMatrix(string name, Parameter p) =>
        p.dim() == 2 && name.StartsWith("h.", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal);

    /// <summary>c_attn is the query, key and value projections side by side: three (C, C) blocks.</summary>
    public static int BlocksOf(string name) => name.EndsWith(".attn.c_attn.weight", StringComparison.Ordinal) ? 3 : 1;

    public OptimizerKind Kind => OptimizerKind.Muon;
    public double LearningRate { get; }
    public double Momentum { get; }
    public double PeakLearningRate { get; }
    public double WeightDecay { get; }
    public long Steps { get; private set; }

    public double ClipGradNorm(double maxNorm) => GradientClipping.Clip(_matrices.Select(m => m.Parameter).Concat(_rest.Parameters), maxNorm);

    public void Step(double lr)
    {
        Steps++;
        double rate = LearningRate * lr / PeakLearningRate;
        using (no_grad())
        {
            foreach (var (_, p, blocks, buffer, master) in _matrices)
            {
                if (p.grad is null)
                    continue;
                using var scope = NewDisposeScope();
                var g = p.grad.to(ScalarType.Float32);
                buffer.lerp_(g, 1 - Momentum);
                var update = g.lerp(buffer, Momentum);
                var w = master ?? p;
                if (WeightDecay != 0)
                    w.mul_(1 - rate * WeightDecay);
                long rows = w.shape[0], width = w.shape[1] / blocks;
                // In Linear terms a block maps `rows` inputs to `width` outputs: scale by sqrt(max(1, out / in)).
                double scale = Math.Sqrt(Math.Max(1.0, (double)width / rows));
                for (int b = 0; b < blocks; b++)
                    w.narrow(1, b * width, width).add_(Orthogonalise(update.narrow(1, b * width, width)), alpha: -rate * scale);
                if (master is not null)
                    p.copy_(master);
            }
        }
        _rest.Step(lr);
    }

    /// <summary>
    /// Five steps of Keller Jordan's quintic Newton-Schulz iteration on <paramref name="x"/> (m, n), fp32: about its
    /// polar factor U V^T, every singular value moved into roughly [0.7, 1.2]. The iteration runs on the wide
    /// orientation, so X X^T is the smaller of the two Gram matrices; the polar factor of a transpose is the transpose
    /// of the polar factor, so the result has <paramref name="x"/>'s shape and orientation.
    /// </summary>
    public static Tensor Orthogonalise(Tensor x)
    {
        var (a, b, c) = NewtonSchulzCoefficients;
        using var scope = NewDisposeScope();
        bool tall = x.shape[0] > x.shape[1];
        var y = tall ? x.t() : x;
        y = y / (y.square().sum().sqrt() + NormEpsilon); // Frobenius norm 1: every singular value <= 1
        for (int i = 0; i < NewtonSchulzSteps; i++)
        {
            var gram = y.mm(y.t());                         // (m, m)
            var polynomial = gram * b + gram.mm(gram) * c;  // b A + c A^2
            y = y * a + polynomial.mm(y);
        }
        return (tall ? y.t() : y).contiguous().MoveToOuterDisposeScope();
    }

    public void ZeroGrad()
    {
        foreach (var m in _matrices)
            m.Parameter.grad = null;
        _rest.ZeroGrad();
    }

    public IEnumerable<(string Name, Tensor Value)> MasterWeights() =>
        _matrices.Select(m => (m.Name, m.Master ?? (Tensor)m.Parameter)).Concat(_rest.MasterWeights());

    public IEnumerable<(string Name, Tensor Tensor)> StateTensors() =>
        _matrices.Select(m => (StatePrefix + m.Name, m.Momentum)).Concat(_rest.StateTensors());

    public void Load(string path, long steps)
    {
        using var reader = new SafeTensorsReader(path);
        _rest.Load(reader, path, steps);
        using var _ = no_grad();
        foreach (var m in _matrices)
            OptimizerState.Restore(reader, path, StatePrefix + m.Name, m.Parameter, m.Momentum, "a Muon run of this model");
        Steps = steps;
    }

    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"Muon lr {LearningRate} (x the schedule's share of --lr), momentum {Momentum} (Nesterov), {NewtonSchulzSteps} Newton-Schulz steps in fp32, weight decay {WeightDecay}, on {_matrices.Sum(m => m.Parameter.NumberOfElements):N0} parameters in {_matrices.Sum(m => m.Blocks)} matrices; the rest: {_rest.Describe()}");

    public void Dispose()
    {
        foreach (var m in _matrices)
        {
            m.Momentum.Dispose();
            m.Master?.Dispose();
        }
        _rest.Dispose();
    }
}
