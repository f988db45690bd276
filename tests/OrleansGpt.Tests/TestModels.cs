using OrleansGpt.Training.Model;
using OrleansGpt.Training.Text;
using static TorchSharp.torch;

namespace OrleansGpt.Tests;

/// <summary>Small random models and helpers shared by the tests.</summary>
internal static class TestModels
{
    /// <summary>Two layers, 64 wide, a 300-token vocabulary: milliseconds per forward on CPU.</summary>
    public static GptConfig Tiny { get; } = new() { VocabSize = 300, BlockSize = 64, Layers = 2, Heads = 4, Embedding = 64, Dropout = 0 };

    /// <summary>As small as a model gets but with GPT-2's full vocabulary, for anything that reads real tokens
    /// (prepared data, titles through the tokenizer).</summary>
    public static GptConfig TinyGpt2Vocabulary { get; } = new() { VocabSize = Gpt2Tokenizer.VocabSize, BlockSize = 64, Layers = 2, Heads = 2, Embedding = 32, Dropout = 0 };

    /// <summary>Reads a stream to its end.</summary>
    public static async Task<List<T>> CollectAsync<T>(IAsyncEnumerable<T> stream)
    {
        var items = new List<T>();
        await foreach (var item in stream) items.Add(item);
        return items;
    }

    /// <summary>A randomly initialised model in eval mode, every parameter (biases and LayerNorms included)
    /// perturbed so that a misplaced or transposed tensor changes the output.</summary>
    public static Gpt Random(GptConfig? config = null, long seed = 1)
    {
        var gpt = new Gpt(config ?? Tiny);
        gpt.InitializeWeights(seed);
        using (no_grad())
        {
            using var g = new Generator((ulong)seed + 1000);
            foreach (var (_, p) in gpt.named_parameters())
                p.add_(randn(p.shape, generator: g) * 0.05);
        }
        gpt.eval();
        return gpt;
    }

    /// <summary>Token ids as a (1, T) tensor.</summary>
    public static Tensor Ids(params int[] ids) => tensor(ids.Select(i => (long)i).ToArray(), [1L, ids.Length]);

    /// <summary>A tensor's values as a float array (converted to float32).</summary>
    public static float[] Values(Tensor t)
    {
        using var f = t.to(ScalarType.Float32).contiguous();
        return f.data<float>().ToArray();
    }

    /// <summary>A fresh directory under the system temp folder, deleted by the returned handle.</summary>
    public static TempDirectory TempDir() => new();

    public sealed class TempDirectory : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "orleansgpt-tests-" + Guid.NewGuid().ToString("N"));

        public TempDirectory() => Directory.CreateDirectory(Path);

        public string Sub(string name) => System.IO.Path.Combine(Path, name);

        public void Dispose()
        {
            if (Directory.Exists(Path))
                Directory.Delete(Path, recursive: true);
        }
    }
}
