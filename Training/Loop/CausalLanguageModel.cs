using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Loop;

/// <summary>What the training loop needs from a model; it knows nothing else about GPT.</summary>
public interface ITrainableModel
{
    /// <summary>Parameters by name (for the optimizer, its state and weight-decay groups).</summary>
    IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Parameter)> NamedParameters { get; }

    /// <summary>Whether dropout is on.</summary>
    bool IsTraining { get; }

    /// <summary>Switches dropout on (training) or off (evaluation).</summary>
    void SetTraining(bool on);

    /// <summary>
    /// Adds the gradient of <paramref name="scale"/> x (mean next-token loss of <paramref name="blocks"/>) to
    /// every parameter's gradient and returns that mean loss.
    /// </summary>
    /// <param name="blocks">Token ids (B, T); position t predicts token t + 1 within each block.</param>
    /// <param name="untrained">Per position (B x T, row after row): true where its next-token loss is left out (a repeated
    /// prompt, a prompt under the abstract-only loss: <see cref="BlockDataset.UntrainedTargets"/>); null: none. The mean is
    /// over the positions trained.</param>
    double ForwardBackward(Tensor blocks, double scale, bool[]? untrained = null);

    /// <summary>Per row: the sum of next-token losses and the number of predicted tokens, without gradients.</summary>
    /// <param name="blocks">Token ids (B, T).</param>
    /// <param name="lengths">Valid tokens per row (right padding after them is ignored), or null when all are valid.</param>
    (double LossSum, long Tokens)[] Evaluate(Tensor blocks, int[]? lengths = null) =>
        [.. TokenLosses(blocks, lengths).Select(row => (row.Sum(loss => (double)loss), (long)row.Length))];

    /// <summary>Per row: each next-token loss, [t] for position t predicting token t + 1, over the row's valid tokens
    /// (length - 1 of them); without gradients.</summary>
    /// <param name="blocks">Token ids (B, T).</param>
    /// <param name="lengths">Valid tokens per row (right padding after them is ignored), or null when all are valid.</param>
    float[][] TokenLosses(Tensor blocks, int[]? lengths = null);
}

/// <summary>
/// GPT-2 trained as a causal language model with the loss computed in chunks. GPT-2's 50k-wide output layer
/// dominates small models: the logits of one 16 x 256 batch take 823 MB in fp32. So the transformer runs once
/// to its final hidden states, those are detached, and logits, cross-entropy and their backward pass run a
/// chunk of positions at a time, each chunk adding its share to the hidden states' gradient and to wte's; one
/// backward pass through the transformer then finishes. Peak memory holds one chunk's logits, and the chunks
/// have one fixed size, so the allocator reuses the same blocks instead of mapping fresh pages each step.
/// </summary>
public sealed class CausalLanguageModel(Gpt model) : ITrainableModel
{
    // Positions per chunk with the loss kernel: their logits go into one buffer reused by every chunk (512 x 50,258: 51 MB
    // in bf16, 103 MB in fp32). Forward-backward of the tiny preset at 8 x 512 side by side: fp32 chunks of 128 / 512 /
    // 1,024 positions 2.77-2.85 / 2.32-2.42 / 2.39-2.44 s; bf16 256 / 512 / 1,024 0.78-0.84 / 0.78-0.79 / 0.77-0.79 s.
    private const int KernelChunk = 512;

    // Positions per chunk on libtorch's path, which allocates each chunk's logits: 128 x 50,258 x 4 bytes = 26 MB, under
    // glibc's largest mmap threshold (32 MB), so the same heap memory serves every chunk.
    private const int LibTorchChunk = 128;

    /// <summary>The model being trained.</summary>
    public Gpt Model { get; } = model;

    public IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Parameter)> NamedParameters { get; } = [.. model.named_parameters()];

    public bool IsTraining => Model.training;

    public void SetTraining(bool on) => Model.train(on);

    public double ForwardBackward(Tensor blocks, double scale, bool[]? untrained = null)
    {
        long B = blocks.shape[0], T = blocks.shape[1];
        if (untrained is not null && untrained.Length != B * T)
            throw new ArgumentException($"{untrained.Length} untrained flags for {B} x {T} positions", nameof(untrained));
        // Position p predicts token p + 1; a block's last position and an untrained position predict nothing.
        long[] targets = new long[B * T];
        long predictions = 0;
        using (var ids = blocks.to(ScalarType.Int64).cpu().contiguous())
        {
            var tokens = ids.data<long>();
            for (long p = 0; p < B * T; p++)
            {
                long t = p % T;
                bool trained = t < T - 1 && !(untrained?[p] ?? false);
                targets[p] = trained ? tokens[p + 1] : SoftmaxCrossEntropy.NoTarget;
                predictions += trained ? 1 : 0;
            }
        }
        if (predictions == 0)
            throw new ArgumentException("No position of the batch is trained: every one is flagged untrained", nameof(untrained));
        double lossSum = 0;
        using var scope = NewDisposeScope();
        var hidden = Model.Hidden(blocks); // (B, T, C), with the graph through the transformer
        var weight = Model.OutputWeight;   // (V, C)
        if (SoftmaxCrossEntropy.Applies(hidden))
        {
            // The output layer differentiated by hand, over the B x T positions flattened into chunks: per chunk,
            // logits (a GEMM into one reused buffer), then the loss and its gradient over the logits in one kernel, then
            // the two GEMMs of the backward pass writing straight into the hidden states' gradient and an accumulator
            // for wte's. One backward pass then takes both through the graph (wte's own share from the embedding lookup
            // is added there). A position with NoTarget adds no loss and a zero gradient.
            var states = hidden.detach().view(B * T, -1);              // (B * T, C)
            var statesGrad = empty_like(states);                        // (B * T, C), every row written below
            // wte's gradient accumulates transposed: x^T (C, n) @ gradient (n, V) into (C, V) measured 1.2-1.8x the
            // rate of gradient^T @ x into (V, C) in bf16 (oneDNN, n 256-1024); the transpose is read once at the end.
            // Likewise the hidden states' gradient is made transposed, from wte transposed: W^T (C, V) @ gradient^T
            // into (C, n) ran at 916-918 GFLOP/s against 822-824 for gradient @ W into (n, C) (512 positions).
            var weightGradT = empty(weight.shape[1], weight.shape[0], weight.dtype, weight.device); // (C, V)
            var weightT = weight.detach().t().contiguous();                                          // (C, V)
            float gradientScale = (float)(scale / predictions);
            long chunk = KernelChunk;
            using (no_grad())
            {
                var logitsBuffer = empty(Math.Min(chunk, B * T), weight.shape[0], weight.dtype, weight.device); // (chunk, V)
                var statesGradT = empty(weight.shape[1], Math.Min(chunk, B * T), weight.dtype, weight.device);  // (C, chunk)
                for (long start = 0; start < B * T; start += chunk)
                {
                    using var chunkScope = NewDisposeScope();
                    long length = Math.Min(chunk, B * T - start);
                    var x = states.narrow(0, start, length);                     // (length, C)
                    var logits = logitsBuffer.narrow(0, 0, length);              // (length, V), then its gradient
                    logits.addmm_(x, weight.t(), beta: 0, alpha: 1);
                    lossSum += SoftmaxCrossEntropy.LossAndGradient(logits, targets.AsSpan((int)start, (int)length), gradientScale);
                    var xGradT = statesGradT.narrow(1, 0, length).addmm_(weightT, logits.t(), beta: 0, alpha: 1); // (C, length)
                    statesGrad.narrow(0, start, length).copy_(xGradT.t());                                     // (length, C)
                    weightGradT.addmm_(x.t().contiguous(), logits, beta: start == 0 ? 0 : 1, alpha: 1);        // (C, V)
                }
            }
            autograd.backward([hidden, weight], [statesGrad.view(hidden.shape), weightGradT.t()]);
            return lossSum / predictions;
        }

        var h = hidden.detach().requires_grad_(true); // (B, T, C), the leaf the chunks send gradients to
        for (long b = 0; b < B; b++)
        {
            for (long start = 0; start < T - 1; start += LibTorchChunk)
            {
                using var chunkScope = NewDisposeScope();
                long length = Math.Min(LibTorchChunk, T - 1 - start);
                var states = h.select(0, b).narrow(0, start, length); // (length, C)
                var chunkTargets = tensor(targets.AsSpan((int)(b * T + start), (int)length).ToArray()); // (length), NoTarget ignored
                var logits = Model.Logits(states).to(ScalarType.Float32); // (length, V)
                var loss = nn.functional.cross_entropy(logits, chunkTargets, ignore_index: SoftmaxCrossEntropy.NoTarget, reduction: nn.Reduction.Sum);
                lossSum += loss.item<float>();
                (loss * (scale / predictions)).backward();
            }
        }
        hidden.backward([h.grad!]);
        return lossSum / predictions;
    }

    public float[][] TokenLosses(Tensor blocks, int[]? lengths = null)
    {
        long B = blocks.shape[0], T = blocks.shape[1];
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var hidden = Model.Hidden(blocks); // (B, T, C)
        var rows = new float[B][];
        for (long b = 0; b < B; b++)
        {
            long valid = lengths?[b] ?? T; // right padding cannot affect earlier positions under causal attention
            rows[b] = new float[Math.Max(0, valid - 1)];
            for (long start = 0; start < valid - 1; start += LibTorchChunk)
            {
                using var chunkScope = NewDisposeScope();
                long length = Math.Min(LibTorchChunk, valid - 1 - start);
                var logits = Model.Logits(hidden.select(0, b).narrow(0, start, length)).to(ScalarType.Float32); // (length, V)
                var targets = blocks.select(0, b).narrow(0, start + 1, length);
                var losses = nn.functional.cross_entropy(logits, targets, reduction: nn.Reduction.None).contiguous(); // (length)
                losses.data<float>().CopyTo(rows[b], (int)start);
            }
        }
        return rows;
    }
}
