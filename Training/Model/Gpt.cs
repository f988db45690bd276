// GPT-2 in TorchSharp: config, Conv1D, attention, MLP, block, model, in call order.
//
// References: OpenAI's GPT-2 (Radford et al. 2019, github.com/openai/gpt-2 model.py), Hugging Face
// transformers' modeling_gpt2.py (GPT2LMHeadModel), and Karpathy's nanoGPT model.py.
//
// Module fields carry Hugging Face's state-dict names (wte, wpe, h, ln_f, ln_1, attn, c_attn, c_proj, mlp,
// c_fc): TorchSharp registers submodules and parameters under their field names, so these names *are* the
// checkpoint keys (without the "transformer." prefix GPT2LMHeadModel adds). See Gpt2Checkpoint.
using OrleansGpt.Training.Numerics;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Model;

/// <summary>The shape of a GPT-2 model, with Hugging Face's config.json names noted on each field.</summary>
public sealed record GptConfig
{
    /// <summary>Tokens in the vocabulary (vocab_size).</summary>
    /// <remarks>50258: GPT-2's 50257 plus the paper's &lt;|sep|&gt; (id 50257).</remarks>
    public int VocabSize { get; init; } = 50258;

    /// <summary>Longest sequence the position table covers (n_positions).</summary>
    public int BlockSize { get; init; } = 1024;

    /// <summary>Transformer blocks (n_layer).</summary>
    public int Layers { get; init; } = 12;

    /// <summary>Attention heads per block (n_head).</summary>
    public int Heads { get; init; } = 12;

    /// <summary>Width of the residual stream (n_embd).</summary>
    public int Embedding { get; init; } = 768;

    /// <summary>LayerNorm epsilon (layer_norm_epsilon); GPT-2 used 1e-5.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;

    /// <summary>Dropout on embeddings, attention weights and residual branches (embd/attn/resid_pdrop).</summary>
    /// <remarks>0.1 as GPT-2 and Hugging Face; only active in training mode.</remarks>
    public double Dropout { get; init; } = 0.1;

    /// <summary>Width of one attention head.</summary>
    public int HeadSize => Embedding / Heads;

    /// <summary>A 4-layer, 256-wide model: what this CPU can train from scratch in minutes.</summary>
    public static GptConfig Tiny { get; } = new() { Layers = 4, Heads = 4, Embedding = 256, BlockSize = 512 };

    /// <summary>distilgpt2 (82M parameters): 6 layers of GPT-2 small's width.</summary>
    public static GptConfig Distil { get; } = new() { Layers = 6, Heads = 12, Embedding = 768 };

    /// <summary>gpt2 (124M).</summary>
    public static GptConfig Small { get; } = new() { Layers = 12, Heads = 12, Embedding = 768 };

    /// <summary>gpt2-medium (355M).</summary>
    public static GptConfig Medium { get; } = new() { Layers = 24, Heads = 16, Embedding = 1024 };

    /// <summary>gpt2-large (774M).</summary>
    public static GptConfig Large { get; } = new() { Layers = 36, Heads = 20, Embedding = 1280 };

    /// <summary>gpt2-xl (1.5B).</summary>
    public static GptConfig Xl { get; } = new() { Layers = 48, Heads = 25, Embedding = 1600 };

    /// <summary>The preset names accepted by <see cref="FromPreset"/>.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = ["tiny", "distil", "small", "medium", "large", "xl"];

    /// <summary>Looks up a preset by name (tiny, distil, small, medium, large, xl).</summary>
    public static GptConfig FromPreset(string name) => name.ToLowerInvariant() switch
    {
        "tiny" => Tiny,
        "distil" or "distilgpt2" => Distil,
        "small" or "gpt2" => Small,
        "medium" or "gpt2-medium" => Medium,
        "large" or "gpt2-large" => Large,
        "xl" or "gpt2-xl" => Xl,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name,
            $"Unknown model size '{name}'; expected one of {string.Join(", ", PresetNames)}"),
    };

    /// <summary>Throws when the numbers cannot make a model.</summary>
    public GptConfig Validate()
    {
        if (VocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(VocabSize), VocabSize, "must be positive");
        if (BlockSize <= 0) throw new ArgumentOutOfRangeException(nameof(BlockSize), BlockSize, "must be positive");
        if (Layers <= 0) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "must be positive");
        if (Heads <= 0 || Embedding <= 0 || Embedding % Heads != 0)
            throw new ArgumentOutOfRangeException(nameof(Heads), Heads, $"n_embd {Embedding} must be a positive multiple of n_head {Heads}");
        if (Dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "must be in [0, 1)");
        return this;
    }

    /// <summary>Parameters of the model built from this config, the tied output layer counted once.</summary>
    public long ParameterCount
    {
        get
        {
            long c = Embedding;
            long perBlock = 2 * 2 * c           // ln_1, ln_2
                + c * 3 * c + 3 * c             // attn.c_attn
                + c * c + c                     // attn.c_proj
                + c * 4 * c + 4 * c             // mlp.c_fc
                + 4 * c * c + c;                // mlp.c_proj
            return (long)VocabSize * c + (long)BlockSize * c + Layers * perBlock + 2 * c;
        }
    }
}

/// <summary>
/// GPT-2's linear layer. OpenAI's TensorFlow code stored it as a 1x1 convolution, so its weight is
/// [in, out] (the transpose of nn.Linear's [out, in]); Hugging Face kept that layout as Conv1D, and so do we,
/// which lets checkpoints load without transposing.
/// </summary>
public sealed class Conv1D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Field names are the checkpoint keys.
    private readonly Parameter weight; // (in, out)
    private readonly Parameter bias;   // (out)
#pragma warning restore IDE1006
    private readonly long _inFeatures;
    private readonly long _outFeatures;
    private readonly object _packLock = new(); // a silo's decode loop and a test may run one model's steps at once
    private PackedWeight? _packed;           // weight in decode panels; not a parameter, never saved

    public Conv1D(long inFeatures, long outFeatures) : base(nameof(Conv1D))
    {
        _inFeatures = inFeatures;
        _outFeatures = outFeatures;
        weight = new Parameter(empty(inFeatures, outFeatures));
        bias = new Parameter(zeros(outFeatures));
        RegisterComponents();
    }

    /// <summary>The [in, out] weight, for initialisation.</summary>
    public Parameter Weight => weight;

    public override Tensor forward(Tensor x)
    {
        long[] shape = x.shape;
        shape[^1] = _outFeatures;
        using var flat = x.reshape(-1, _inFeatures);
        using var y = SmallBatchMatMul.Applies(flat.shape[0], flat, weight)
            ? (training ? SmallBatchMatMul.Forward(flat, weight, bias) : SmallBatchMatMul.Forward(flat, Packed(), bias)) // a decode step's few rows
            : PrecisionSupport.EmulatesBf16Products(flat)
            ? PrecisionSupport.WidenedProduct(flat, weight, bias) // a bf16 prefill where libtorch would emulate bf16 GEMMs
            : addmm(bias, flat, weight, beta: 1, alpha: 1);
        return y.view(shape);
    }

    /// <summary>The weight in the panels decode products read (<see cref="PackedWeight"/>), packed on first use in
    /// inference; a module in training mode never uses it, as its weights change every step.</summary>
    private PackedWeight Packed()
    {
        lock (_packLock)
        {
            if (_packed is null || !_packed.Matches(weight))
            {
                _packed?.Dispose();
                _packed = PackedWeight.Pack(weight);
            }
            return _packed;
        }
    }

    /// <summary>Drops the packed copy; call after changing the weight in place (<see cref="Gpt.InvalidateDerivedWeights"/>
    /// does, for every layer, also whenever the model switches between training and inference).</summary>
    public void InvalidateDerivedWeights()
    {
        lock (_packLock)
        {
            _packed?.Dispose();
            _packed = null;
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            InvalidateDerivedWeights();
        base.Dispose(disposing);
    }
}

/// <summary>
/// Keys and values of earlier positions, which attention reads and appends to: what lets each decoding step
/// compute only the new positions.
/// </summary>
public interface IKvCache
{
    /// <summary>Element type of the cached keys and values: the model's where <see cref="DecodeAttention"/> reads them,
    /// else the type libtorch's attention runs in (<see cref="Gpt.AttentionDtype"/>).</summary>
    ScalarType Dtype { get; }

    /// <summary>Sequences in the batch.</summary>
    long Batch { get; }

    /// <summary>The longest sequence once <paramref name="t"/> more positions are added (checked against the block size).</summary>
    int LengthAfter(long t);

    /// <summary>Positions of the next <paramref name="t"/> tokens, (B, t) or (1, t) when every row shares them.</summary>
    Tensor Positions(long t, Device device);

    /// <summary>
    /// Stores one layer's new keys and values and returns what the new queries attend to: keys and values
    /// (B, nh, L, hs), and either a boolean mask broadcastable to (B, nh, T, L) or the causal flag.
    /// </summary>
    (Tensor Keys, Tensor Values, Tensor? Mask, bool IsCausal) Append(int layer, Tensor k, Tensor v);

    /// <summary>Called once every layer has appended the step's <paramref name="t"/> positions.</summary>
    void Advance(int t);

    /// <summary>
    /// One new position per row, attended by <see cref="DecodeAttention"/>: stores one layer's new keys and values and
    /// returns attention's output (B, C) with the heads merged; or null, and the caller goes through
    /// <see cref="Append"/> and scaled_dot_product_attention instead.
    /// </summary>
    /// <param name="qkv">The layer's query, key and value projections for the step (B, 3C), contiguous.</param>
    Tensor? AttendOne(int layer, Tensor qkv) => null;
}

/// <summary>The causal mask for new queries after cached positions.</summary>
internal static class CausalMask
{
    /// <summary>
    /// With nothing cached, SDPA's is_causal does it. One new token may see every cached position, so it needs no
    /// mask (and is_causal would wrongly align the mask to the top-left). Several new tokens after cached ones need
    /// an explicit mask: query i sees keys 0 .. past + i.
    /// </summary>
    public static (Tensor? Mask, bool IsCausal) For(int past, long t, Device device) =>
        past > 0 && t > 1 ? (ones(t, past + t, ScalarType.Bool, device).tril(past), false) // (t, past + t)
        : (null, past == 0 && t > 1);
}

/// <summary>
/// Keys and values of every layer for a batch of sequences that advance together (one prompt length), so each
/// decode step only computes the new position. Buffers are allocated once at full capacity and never
/// reallocated; attention reads a narrowed view of the filled part.
/// </summary>
public sealed class KvCache : IKvCache, IDisposable
{
    private readonly Tensor[] _keys;   // per layer (B, nh, capacity, hs)
    private readonly Tensor[] _values; // per layer (B, nh, capacity, hs)
    private readonly int _headSize;

    public KvCache(GptConfig config, long batch, int capacity, ScalarType dtype, Device device)
    {
        if (capacity > config.BlockSize)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"a cache of {capacity} positions is longer than the block size {config.BlockSize}");
        Dtype = dtype;
        Capacity = capacity;
        Batch = batch;
        _headSize = config.HeadSize;
        _keys = new Tensor[config.Layers];
        _values = new Tensor[config.Layers];
        for (int i = 0; i < config.Layers; i++)
        {
            _keys[i] = zeros([batch, config.Heads, capacity, config.HeadSize], dtype, device).DetachFromDisposeScope();
            _values[i] = zeros([batch, config.Heads, capacity, config.HeadSize], dtype, device).DetachFromDisposeScope();
        }
    }

    /// <summary>Positions each buffer can hold.</summary>
    public int Capacity { get; }

    public ScalarType Dtype { get; }

    public long Batch { get; }

    /// <summary>Positions filled so far (the next token's position).</summary>
    public int Length { get; private set; }

    public int LengthAfter(long t) => Length + (int)t;

    public Tensor Positions(long t, Device device) => arange(Length, Length + t, dtype: ScalarType.Int64, device: device).unsqueeze(0); // (1, t)

    public (Tensor Keys, Tensor Values, Tensor? Mask, bool IsCausal) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (Length + t > Capacity)
            throw new InvalidOperationException($"Cannot append {t} positions to a KV cache holding {Length} of {Capacity}");
        _keys[layer].narrow(2, Length, t).copy_(k);
        _values[layer].narrow(2, Length, t).copy_(v);
        var (mask, causal) = CausalMask.For(Length, t, k.device);
        return (_keys[layer].narrow(2, 0, Length + t), _values[layer].narrow(2, 0, Length + t), mask, causal);
    }

    public void Advance(int t) => Length += t;

    public Tensor? AttendOne(int layer, Tensor qkv)
    {
        if (!DecodeAttention.Applies(qkv, Dtype, _headSize))
            return null;
        if (Length + 1 > Capacity)
            throw new InvalidOperationException($"Cannot append 1 position to a KV cache holding {Length} of {Capacity}");
        Span<int> positions = stackalloc int[(int)Batch];
        positions.Fill(Length); // every row writes and reads up to the same position
        return DecodeAttention.Step(qkv, _keys[layer], _values[layer], positions);
    }

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }
}

/// <summary>Dropout on embeddings and residual branches (embd_pdrop, resid_pdrop): <see cref="HashDropout"/> where it
/// applies (its mask is recomputed from a seed, never drawn element by element nor stored), libtorch's elsewhere.</summary>
public sealed class GptDropout(double probability) : nn.Module<Tensor, Tensor>(nameof(GptDropout))
{
    public override Tensor forward(Tensor x) =>
        !training || probability == 0 ? x
        : HashDropout.Applies(x) ? HashDropout.Apply(x, probability)
        : nn.functional.dropout(x, probability, training: true);
}

/// <summary>Multi-head causal self-attention.</summary>
public sealed class CausalSelfAttention : nn.Module
{
#pragma warning disable IDE1006 // Field names are the checkpoint keys.
    private readonly Conv1D c_attn;  // query, key and value projections in one (C -> 3C)
    private readonly Conv1D c_proj;  // output projection (C -> C)
    private readonly GptDropout resid_dropout;
#pragma warning restore IDE1006
    private readonly GptConfig _config;
    private readonly int _layer;

    public CausalSelfAttention(GptConfig config, int layer) : base(nameof(CausalSelfAttention))
    {
        _config = config;
        _layer = layer;
        c_attn = new Conv1D(config.Embedding, 3L * config.Embedding);
        c_proj = new Conv1D(config.Embedding, config.Embedding);
        resid_dropout = new GptDropout(config.Dropout);
        RegisterComponents();
    }

    internal Conv1D QkvProjection => c_attn;
    internal Conv1D OutputProjection => c_proj;

    public Tensor forward(Tensor x, IKvCache? cache)
    {
        long B = x.shape[0], T = x.shape[1], C = x.shape[2];
        long nh = _config.Heads, hs = _config.HeadSize;

        var projected = c_attn.forward(x); // (B, T, 3C)
        if (T == 1 && cache?.AttendOne(_layer, projected.view(B, 3 * C)) is { } attended) // (B, C)
            return resid_dropout.forward(c_proj.forward(attended.view(B, 1, C)));

        if (cache is null && CausalAttention.Applies(projected, nh))
        {
            // Whole sequences (training, evaluation): our kernel, which applies attention dropout without leaving the
            // fused path (libtorch's CPU flash attention takes no dropout).
            var whole = CausalAttention.Attend(projected, (int)nh, training ? _config.Dropout : 0.0); // (B, T, C)
            return resid_dropout.forward(c_proj.forward(whole));
        }

        var qkv = projected.split(C, dim: 2);
        var q = qkv[0].view(B, T, nh, hs).transpose(1, 2); // (B, nh, T, hs)
        var k = qkv[1].view(B, T, nh, hs).transpose(1, 2); // (B, nh, T, hs)
        var v = qkv[2].view(B, T, nh, hs).transpose(1, 2); // (B, nh, T, hs)

        Tensor? mask = null;
        bool isCausal = T > 1;
        if (cache is not null)
            (k, v, mask, isCausal) = cache.Append(_layer, k, v); // (B, nh, L, hs), in the cache's dtype
        var attentionDtype = Gpt.AttentionDtypeFor(x.dtype, x.device);
        if (q.dtype != attentionDtype) q = q.to(attentionDtype);
        if (k.dtype != attentionDtype) k = k.to(attentionDtype);
        if (v.dtype != attentionDtype) v = v.to(attentionDtype);

        double dropout = training ? _config.Dropout : 0.0;
        var heads = nn.functional.scaled_dot_product_attention(q, k, v, mask, dropout, is_casual: isCausal); // (B, nh, T, hs)
        var merged = heads.transpose(1, 2).contiguous().view(B, T, C).to(x.dtype); // (B, T, C)
        return resid_dropout.forward(c_proj.forward(merged));
    }
}

/// <summary>The feed-forward half of a block: expand 4x, GELU (tanh form, "gelu_new"), project back.</summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Field names are the checkpoint keys.
    private readonly Conv1D c_fc;
    private readonly Conv1D c_proj;
    private readonly GptDropout dropout;
#pragma warning restore IDE1006

    public Mlp(GptConfig config) : base(nameof(Mlp))
    {
        c_fc = new Conv1D(config.Embedding, 4L * config.Embedding);
        c_proj = new Conv1D(4L * config.Embedding, config.Embedding);
        dropout = new GptDropout(config.Dropout);
        RegisterComponents();
    }

    internal Conv1D OutputProjection => c_proj;

    public override Tensor forward(Tensor x)
    {
        using var h = c_fc.forward(x); // (B, T, 4C)
        using var a = TanhGelu.Applies(h) ? TanhGelu.Apply(h) : nn.functional.gelu(h, GELU.Approximate.tanh);
        return dropout.forward(c_proj.forward(a)); // (B, T, C)
    }
}

/// <summary>A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).</summary>
public sealed class Block : nn.Module
{
#pragma warning disable IDE1006 // Field names are the checkpoint keys.
    private readonly LayerNorm ln_1;
    private readonly CausalSelfAttention attn;
    private readonly LayerNorm ln_2;
    private readonly Mlp mlp;
#pragma warning restore IDE1006

    public Block(GptConfig config, int layer) : base(nameof(Block))
    {
        ln_1 = nn.LayerNorm(config.Embedding, config.LayerNormEpsilon);
        attn = new CausalSelfAttention(config, layer);
        ln_2 = nn.LayerNorm(config.Embedding, config.LayerNormEpsilon);
        mlp = new Mlp(config);
        RegisterComponents();
    }

    internal CausalSelfAttention Attention => attn;
    internal Mlp Mlp => mlp;

    public Tensor forward(Tensor x, IKvCache? cache)
    {
        x = x + attn.forward(ln_1.forward(x), cache);
        return x + mlp.forward(ln_2.forward(x));
    }
}

/// <summary>
/// GPT-2 with its language-model head tied to the token embedding (GPT2LMHeadModel).
/// </summary>
public sealed class Gpt : nn.Module
{
#pragma warning disable IDE1006 // Field names are the checkpoint keys.
    private readonly Embedding wte;   // token embedding (V, C), also the output layer
    private readonly Embedding wpe;   // position embedding (block size, C)
    private readonly GptDropout drop;
    private readonly ModuleList<Block> h;
    private readonly LayerNorm ln_f;
#pragma warning restore IDE1006
    private Tensor? _outputInOut;         // (C, V) copy of wte for single-row inference; not a parameter, never saved
    private PackedWeight? _outputPacked;  // the same, in the panels of our own decode products

    public Gpt(GptConfig config) : base(nameof(Gpt))
    {
        Config = config.Validate();
        wte = nn.Embedding(config.VocabSize, config.Embedding);
        wpe = nn.Embedding(config.BlockSize, config.Embedding);
        drop = new GptDropout(config.Dropout);
        h = nn.ModuleList(Enumerable.Range(0, config.Layers).Select(i => new Block(config, i)).ToArray());
        ln_f = nn.LayerNorm(config.Embedding, config.LayerNormEpsilon);
        RegisterComponents();
    }

    /// <summary>The model's shape.</summary>
    public GptConfig Config { get; }

    /// <summary>The element type of the weights (float32 or bfloat16).</summary>
    public ScalarType Dtype => wte.weight!.dtype;

    /// <summary>The device holding the weights.</summary>
    public Device Device => wte.weight!.device;

    /// <summary>The token embedding table (V, C), shared with the output layer.</summary>
    public Parameter TokenEmbedding => wte.weight!;

    /// <summary>
    /// GPT-2's initialisation (as nanoGPT and Hugging Face's _init_weights): weights N(0, 0.02), biases zero,
    /// LayerNorm (1, 0), and each residual output projection scaled by 1/sqrt(2 * n_layer) so the
    /// residual stream's variance does not grow with depth.
    /// </summary>
    public void InitializeWeights(long seed)
    {
        using var _ = no_grad();
        using var generator = new Generator((ulong)seed, Device);
        const double std = 0.02;
        double residualStd = std / Math.Sqrt(2.0 * Config.Layers);
        nn.init.normal_(wte.weight!, 0, std, generator);
        nn.init.normal_(wpe.weight!, 0, std, generator);
        foreach (var block in h)
        {
            nn.init.normal_(block.Attention.QkvProjection.Weight, 0, std, generator);
            nn.init.normal_(block.Attention.OutputProjection.Weight, 0, residualStd, generator);
            nn.init.normal_(block.Mlp.OutputProjection.Weight, 0, residualStd, generator);
        }
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("c_fc.weight", StringComparison.Ordinal))
                nn.init.normal_(p, 0, std, generator);
            else if (name.EndsWith(".bias", StringComparison.Ordinal))
                p.zero_();
            else if (name.Contains("ln_", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal))
                p.fill_(1.0);
        }
    }

    /// <summary>
    /// Runs the transformer over <paramref name="idx"/> and returns the final hidden states (after ln_f).
    /// With a cache, positions continue from what it holds and the new keys and values are appended to it.
    /// </summary>
    /// <param name="idx">Token ids (B, T).</param>
    /// <param name="cache">Keys and values of earlier positions, or null for a full forward.</param>
    /// <returns>Hidden states (B, T, C).</returns>
    public Tensor Hidden(Tensor idx, IKvCache? cache = null)
    {
        long B = idx.shape[0], T = idx.shape[1];
        int longest = cache?.LengthAfter(T) ?? (int)T;
        if (longest > Config.BlockSize)
            throw new ArgumentOutOfRangeException(nameof(idx), $"Cannot forward sequence of length {longest}, block size is only {Config.BlockSize}");
        if (cache is not null && cache.Batch != B)
            throw new ArgumentException($"The KV cache holds {cache.Batch} sequences but the batch has {B}", nameof(cache));

        using var scope = NewDisposeScope();
        var pos = cache?.Positions(T, idx.device) ?? arange(0, T, dtype: ScalarType.Int64, device: idx.device); // (T), (1, T) or (B, T)
        var x = drop.forward(wte.forward(idx) + wpe.forward(pos)); // (B, T, C)
        foreach (var block in h)
            x = block.forward(x, cache);
        cache?.Advance((int)T);
        return ln_f.forward(x).MoveToOuterDisposeScope(); // (B, T, C)
    }

    /// <summary>The output layer's weight (V, C): wte itself, which the output layer shares with the token embedding.</summary>
    internal Tensor OutputWeight => wte.weight!;

    /// <summary>Next-token logits for hidden states, through the output layer tied to wte.</summary>
    /// <param name="hidden">Hidden states (..., C).</param>
    /// <returns>Logits (..., V) in the model's dtype.</returns>
    public Tensor Logits(Tensor hidden)
    {
        // A few rows are matrix-vector products bound by memory bandwidth, which read a (C, V) row-major matrix
        // faster than the transposed view of wte's (V, C): libtorch's CPU GEMV 1.7x (fp32 small: 9.5 vs 16.6 ms per
        // token here). So decoding keeps a (C, V) copy of wte, packed in panels where our own kernels read it.
        // Batches of many rows go through linear.
        if (!training)
        {
            long rows = hidden.NumberOfElements / Config.Embedding;
            long[] shape = hidden.shape;
            shape[^1] = Config.VocabSize;
            using var flat = hidden.reshape(-1, Config.Embedding);
            using var logits = SmallBatchMatMul.Applies(rows, hidden, wte.weight!)
                ? SmallBatchMatMul.Forward(flat, OutputPacked(), bias: null)
                : PrecisionSupport.EmulatesBf16Products(hidden)
                ? PrecisionSupport.WidenedProduct(flat, OutputInOut(), bias: null) // libtorch would emulate bf16
                : rows == 1
                ? matmul(flat, OutputInOut())
                : null;
            if (logits is not null)
                return logits.view(shape);
        }
        return nn.functional.linear(hidden, wte.weight!);
    }

    /// <summary>The (C, V) copy of wte for single-row logits through libtorch, rebuilt when the weights' dtype or device changed.</summary>
    private Tensor OutputInOut()
    {
        var w = wte.weight!;
        if (_outputInOut is null || _outputInOut.dtype != w.dtype || _outputInOut.device_type != w.device_type)
        {
            _outputInOut?.Dispose();
            using var _ = no_grad();
            _outputInOut = w.detach().t().contiguous().DetachFromDisposeScope();
        }
        return _outputInOut;
    }

    /// <summary>wte's transpose (C, V) packed in the panels our decode products read, rebuilt as <see cref="OutputInOut"/> is.</summary>
    private PackedWeight OutputPacked()
    {
        var w = wte.weight!;
        using var transposed = w.t();
        if (_outputPacked is null || !_outputPacked.Matches(transposed))
        {
            _outputPacked?.Dispose();
            _outputPacked = PackedWeight.Pack(transposed);
        }
        return _outputPacked;
    }

    /// <summary>Drops copies derived from the weights (the output layer's, every Conv1D's packed panels); call after
    /// changing weights in place.</summary>
    public void InvalidateDerivedWeights()
    {
        _outputInOut?.Dispose();
        _outputInOut = null;
        _outputPacked?.Dispose();
        _outputPacked = null;
        foreach (var conv in modules().OfType<Conv1D>())
            conv.InvalidateDerivedWeights();
    }

    /// <summary>Switches training mode; weights are about to change, so derived copies are dropped.</summary>
    public override void train(bool on = true)
    {
        base.train(on);
        InvalidateDerivedWeights();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            InvalidateDerivedWeights();
        base.Dispose(disposing);
    }

    /// <summary>Full forward: logits at every position.</summary>
    /// <param name="idx">Token ids (B, T).</param>
    /// <returns>Logits (B, T, V).</returns>
    public Tensor forward(Tensor idx, IKvCache? cache = null)
    {
        using var hidden = Hidden(idx, cache);
        return Logits(hidden);
    }

    /// <summary>Logits of the next token after the last position only, which spares the 50k-wide output layer
    /// the other T - 1 positions during prefill.</summary>
    /// <param name="idx">Token ids (B, T).</param>
    /// <returns>Logits (B, V) as float32.</returns>
    public Tensor NextTokenLogits(Tensor idx, IKvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var hidden = Hidden(idx, cache); // (B, T, C)
        var last = hidden.select(1, hidden.shape[1] - 1); // (B, C)
        return Logits(last).to(ScalarType.Float32).MoveToOuterDisposeScope(); // (B, V)
    }

    /// <summary>Logits of the token after position <c>lengths[b] - 1</c> of each row: for a batch of right-padded
    /// prompts of different lengths, each row's own last real position.</summary>
    /// <param name="idx">Token ids (B, T), row b real up to lengths[b].</param>
    /// <returns>Logits (B, V) as float32.</returns>
    public Tensor NextTokenLogits(Tensor idx, IKvCache cache, int[] lengths)
    {
        using var scope = NewDisposeScope();
        var hidden = Hidden(idx, cache); // (B, T, C)
        var rows = arange(0, hidden.shape[0], dtype: ScalarType.Int64, device: hidden.device);
        var last = tensor(lengths.Select(l => (long)l - 1).ToArray(), device: hidden.device);
        return Logits(hidden.index([rows, last])).to(ScalarType.Float32).MoveToOuterDisposeScope(); // (B, V)
    }

    /// <summary>
    /// The element type attention runs in during cached decoding: float32 on CPU, where libtorch's bf16
    /// scaled_dot_product_attention measured 6x slower than fp32 (batch 8, 100 keys: 9.6 vs 1.5 ms for 12
    /// layers) while converting the few new keys and values costs little. Elsewhere, the model's dtype.
    /// </summary>
    public ScalarType AttentionDtype => AttentionDtypeFor(Dtype, Device);

    internal static ScalarType AttentionDtypeFor(ScalarType dtype, Device device) => device.type == DeviceType.CPU ? ScalarType.Float32 : dtype;

    /// <summary>
    /// The element type KV caches hold: the model's own where <see cref="DecodeAttention"/> reads the cache in decode
    /// steps (half the bytes a step reads in bf16, with nothing lost: the keys and values are bf16 values already);
    /// otherwise <see cref="AttentionDtype"/>, so libtorch's attention needs no conversion. Fixed when a cache is made.
    /// </summary>
    public ScalarType CacheDtype => DecodeAttention.Reads(Dtype, Device, Config.HeadSize) ? Dtype : AttentionDtype;

    /// <summary>Makes a KV cache for <paramref name="batch"/> sequences of up to <paramref name="capacity"/> positions.</summary>
    public KvCache NewCache(long batch, int capacity) => new(Config, batch, capacity, CacheDtype, Device);
}
