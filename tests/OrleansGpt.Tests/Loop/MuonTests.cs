using OrleansGpt.Training.Loop;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Loop;

/// <summary>
/// Muon's update against the same arithmetic written out in float64 with plain arrays (momentum, Nesterov, the
/// quintic Newton-Schulz iteration, the shape scale, decoupled weight decay), over two steps so the momentum carries;
/// which parameters it takes and which it leaves to AdamW; bf16 parameters with fp32 masters.
/// </summary>
public sealed class MuonTests
{
    private const double Momentum = 0.9, WeightDecay = 0.1, MuonRate = 0.02, Peak = 1e-3;
    private static readonly double[] s_rates = [1e-3, 4e-4]; // the schedule's rate at two steps: Muon takes 0.02 and 0.008

    // Conv1D weights are (in, out): c_attn holds q, k and v side by side, c_fc is wide (scale 2), c_proj is tall.
    private static readonly (string Name, long Rows, long Columns)[] s_matrices =
        [("h.0.attn.c_attn.weight", 4, 12), ("h.0.mlp.c_fc.weight", 4, 16), ("h.0.mlp.c_proj.weight", 16, 4)];
    private static readonly (string Name, long Rows, long Columns)[] s_others = [("wte.weight", 10, 4), ("h.0.ln_1.bias", 1, 4)];

    [Fact]
    public void TwoStepsEqualAFloat64Reference()
    {
        using var scope = NewDisposeScope();
        using var random = new Generator(5);
        var all = s_matrices.Concat(s_others).ToArray();
        var parameters = all.Select(m => (m.Name, Parameter: new Parameter(randn(m.Rows == 1 ? [m.Columns] : [m.Rows, m.Columns], generator: random)))).ToList();
        var gradients = Enumerable.Range(0, 2).Select(_ => all.Select(m => randn(m.Rows == 1 ? [m.Columns] : [m.Rows, m.Columns], generator: random)).ToArray()).ToArray();

        // The reference: the matrices in doubles, the rest through AdamW alone on copies.
        var expected = s_matrices.Select((m, i) => Doubles(parameters[i].Parameter)).ToArray();
        var buffers = s_matrices.Select(m => new double[m.Rows, m.Columns]).ToArray();
        var others = parameters.Skip(s_matrices.Length).Select(p => (p.Name, Parameter: new Parameter(p.Parameter.detach().clone()))).ToList();
        using var adamW = new AdamW(others, WeightDecay);

        using var muon = new Muon(parameters, MuonRate, Momentum, Peak, WeightDecay);
        for (int step = 0; step < 2; step++)
        {
            for (int i = 0; i < all.Length; i++)
                parameters[i].Parameter.grad = gradients[step][i].clone();
            for (int i = 0; i < others.Count; i++)
                others[i].Parameter.grad = gradients[step][s_matrices.Length + i].clone();
            muon.Step(s_rates[step]);
            adamW.Step(s_rates[step]);
            for (int i = 0; i < s_matrices.Length; i++)
                ReferenceStep(expected[i], buffers[i], Doubles(gradients[step][i]), blocks: Muon.BlocksOf(s_matrices[i].Name), MuonRate * s_rates[step] / Peak);
        }

        for (int i = 0; i < s_matrices.Length; i++)
        {
            var actual = Doubles(parameters[i].Parameter);
            double worst = 0;
            for (int r = 0; r < actual.GetLength(0); r++)
                for (int c = 0; c < actual.GetLength(1); c++)
                    worst = Math.Max(worst, Math.Abs(actual[r, c] - expected[i][r, c]));
            Assert.True(worst < 2e-6, $"{s_matrices[i].Name}: largest difference from the float64 reference {worst:G3}");
        }
        for (int i = 0; i < others.Count; i++)
            Assert.Equal(TestModels.Values(others[i].Parameter), TestModels.Values(parameters[s_matrices.Length + i].Parameter)); // AdamW's, bit for bit
        Assert.Equal(2, muon.Steps);
    }

    [Fact]
    public void MuonTakesTheBlocksMatricesAndLeavesEmbeddingsBiasesAndLayerNormsToAdamW()
    {
        using var matrix = new Parameter(zeros(4, 12));
        using var vector = new Parameter(zeros(4));
        Assert.True(Muon.TakesMatrix("h.3.attn.c_attn.weight", matrix));
        Assert.True(Muon.TakesMatrix("h.3.mlp.c_proj.weight", matrix));
        Assert.False(Muon.TakesMatrix("wte.weight", matrix));   // also the tied output layer
        Assert.False(Muon.TakesMatrix("wpe.weight", matrix));
        Assert.False(Muon.TakesMatrix("h.3.ln_1.weight", vector));
        Assert.False(Muon.TakesMatrix("h.3.attn.c_attn.bias", vector));
        Assert.Equal(3, Muon.BlocksOf("h.3.attn.c_attn.weight"));
        Assert.Equal(1, Muon.BlocksOf("h.3.attn.c_proj.weight"));
    }

    [Fact]
    public void NewtonSchulzMovesEverySingularValueNearOneAndKeepsTheShape()
    {
        using var scope = NewDisposeScope();
        using var random = new Generator(3);
        // Singular values spread over more than an order of magnitude (the shorter side scaled from 0.03 to 1), wide and tall.
        foreach (var (rows, columns) in new[] { (24L, 64L), (64L, 24L) })
        {
            var spread = logspace(-1.5, 0, Math.Min(rows, columns), dtype: ScalarType.Float32);
            var x = randn([rows, columns], generator: random) * (rows < columns ? spread.unsqueeze(1) : spread);
            var o = Muon.Orthogonalise(x);
            Assert.Equal(x.shape, o.shape);
            var singular = linalg.svdvals(o);
            double low = singular.min().item<float>(), high = singular.max().item<float>();
            // Keller Jordan's coefficients trade exactness for speed: about [0.7, 1.2] after five steps.
            Assert.True(low > 0.5 && high < 1.3, $"{rows} x {columns}: singular values in [{low:F3}, {high:F3}]");
            var input = linalg.svdvals(x);
            Assert.True(input.max().item<float>() / input.min().item<float>() > 10, "the test's input is not ill-conditioned");
        }
    }

    [Fact]
    public void Bf16ParametersKeepFp32MastersThatMatchAnFp32Run()
    {
        using var scope = NewDisposeScope();
        using var random = new Generator(8);
        var weight = randn([4, 16], generator: random);
        var gradient = randn([4, 16], generator: random).to(ScalarType.BFloat16); // what a bf16 backward pass gives
        using var fp32 = new Parameter(weight.clone());
        using var bf16 = new Parameter(weight.to(ScalarType.BFloat16));
        const string name = "h.0.mlp.c_fc.weight";
        using var plain = new Muon([(name, fp32)], MuonRate, Momentum, Peak, WeightDecay);
        using var mixed = new Muon([(name, bf16)], MuonRate, Momentum, Peak, WeightDecay, new Dictionary<string, Tensor> { [name] = weight });
        for (int step = 0; step < 2; step++)
        {
            fp32.grad = gradient.to(ScalarType.Float32);
            bf16.grad = gradient.clone();
            plain.Step(s_rates[step]);
            mixed.Step(s_rates[step]);
        }
        var master = mixed.MasterWeights().Single().Value;
        Assert.Equal(ScalarType.Float32, master.dtype);
        Assert.Equal(TestModels.Values(fp32), TestModels.Values(master));
        Assert.True(bf16.eq(master.to(ScalarType.BFloat16)).all().item<bool>(), "the bf16 parameter is not its master rounded");
    }

    [Fact]
    public void SettingsOutOfRangeAreRefusedNamingTheOption()
    {
        using var p = new Parameter(zeros(4, 4));
        Assert.Contains("--muon-lr", Assert.Throws<ArgumentOutOfRangeException>(() => new Muon([("h.0.attn.c_proj.weight", p)], 0, Momentum, Peak, 0)).Message);
        Assert.Contains("--muon-momentum", Assert.Throws<ArgumentOutOfRangeException>(() => new Muon([("h.0.attn.c_proj.weight", p)], MuonRate, 1, Peak, 0)).Message);
    }

    /// <summary>torch.optim.Muon's step (Nesterov, "original" rate adjustment) on one (in, out) Conv1D weight, in doubles.</summary>
    private static void ReferenceStep(double[,] w, double[,] buffer, double[,] g, int blocks, double rate)
    {
        int rows = w.GetLength(0), columns = w.GetLength(1), width = columns / blocks;
        var update = new double[rows, columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                buffer[r, c] = Momentum * buffer[r, c] + (1 - Momentum) * g[r, c];
                update[r, c] = (1 - Momentum) * g[r, c] + Momentum * buffer[r, c];
                w[r, c] *= 1 - rate * WeightDecay;
            }
        // A block maps `rows` inputs to `width` outputs; torch's weight is (out, in), so its scale is max(1, out / in)^0.5.
        double scale = Math.Sqrt(Math.Max(1.0, (double)width / rows));
        for (int b = 0; b < blocks; b++)
        {
            var block = new double[rows, width];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < width; c++)
                    block[r, c] = update[r, b * width + c];
            var o = NewtonSchulz(block);
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < width; c++)
                    w[r, b * width + c] -= rate * scale * o[r, c];
        }
    }

    /// <summary>Keller Jordan's zeropower_via_newtonschulz5, in doubles.</summary>
    private static double[,] NewtonSchulz(double[,] g)
    {
        const double a = 3.4445, b = -4.7750, c = 2.0315;
        bool tall = g.GetLength(0) > g.GetLength(1);
        var x = tall ? Transpose(g) : (double[,])g.Clone();
        double norm = Math.Sqrt(x.Cast<double>().Sum(v => v * v));
        x = Scale(x, 1 / (norm + 1e-7));
        for (int i = 0; i < 5; i++)
        {
            var gram = Multiply(x, Transpose(x));
            var polynomial = Add(Scale(gram, b), Scale(Multiply(gram, gram), c));
            x = Add(Scale(x, a), Multiply(polynomial, x));
        }
        return tall ? Transpose(x) : x;
    }

    private static double[,] Multiply(double[,] a, double[,] b)
    {
        var result = new double[a.GetLength(0), b.GetLength(1)];
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < b.GetLength(1); j++)
                for (int k = 0; k < a.GetLength(1); k++)
                    result[i, j] += a[i, k] * b[k, j];
        return result;
    }

    private static double[,] Transpose(double[,] a)
    {
        var result = new double[a.GetLength(1), a.GetLength(0)];
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < a.GetLength(1); j++)
                result[j, i] = a[i, j];
        return result;
    }

    private static double[,] Scale(double[,] a, double s)
    {
        var result = (double[,])a.Clone();
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < a.GetLength(1); j++)
                result[i, j] *= s;
        return result;
    }

    private static double[,] Add(double[,] a, double[,] b)
    {
        var result = (double[,])a.Clone();
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < a.GetLength(1); j++)
                result[i, j] += b[i, j];
        return result;
    }

    private static double[,] Doubles(Tensor t)
    {
        var values = TestModels.Values(t);
        long columns = t.shape[^1], rows = values.Length / columns;
        var result = new double[rows, columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                result[r, c] = values[r * columns + c];
        return result;
    }
}
