using System.Text.Json.Nodes;
using OrleansGpt.Training.IO;
using OrleansGpt.Training.Model;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Model;

public sealed class CheckpointTests
{
    private static readonly int[] s_ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];

    [Fact]
    public void SaveThenLoadIsBitExact()
    {
        using var dir = TestModels.TempDir();
        using var model = TestModels.Random();
        Gpt2Checkpoint.Save(model, dir.Path, new ModelProvenance("untrained", "test"));
        using var loaded = Gpt2Checkpoint.Load(dir.Path);

        var original = model.named_parameters().ToDictionary(p => p.name, p => TestModels.Values(p.parameter));
        foreach (var (name, p) in loaded.named_parameters())
            Assert.Equal(original[name], TestModels.Values(p)); // exact float equality
        using var _ = no_grad();
        Assert.Equal(TestModels.Values(model.forward(TestModels.Ids(s_ids))), TestModels.Values(loaded.forward(TestModels.Ids(s_ids))));
        Assert.Equal("untrained", Gpt2Checkpoint.ReadProvenance(dir.Path).Kind);
    }

    [Fact]
    public void SavedFilesFollowHuggingFacesGpt2LMHeadModelLayout()
    {
        using var dir = TestModels.TempDir();
        using var model = TestModels.Random();
        Gpt2Checkpoint.Save(model, dir.Path, new ModelProvenance("untrained", "test"));

        using var reader = new SafeTensorsReader(Path.Combine(dir.Path, Gpt2Checkpoint.WeightsFile));
        Assert.Equal("pt", reader.Metadata["format"]);
        Assert.Equal([64L, 192L], reader.Entries["transformer.h.0.attn.c_attn.weight"].Shape); // Conv1D: [in, out]
        Assert.Equal([64L, 256L], reader.Entries["transformer.h.1.mlp.c_fc.weight"].Shape);
        Assert.Equal([300L, 64L], reader.Entries["transformer.wte.weight"].Shape);
        Assert.DoesNotContain("lm_head.weight", reader.Entries.Keys); // tied, as save_pretrained leaves it out
        Assert.All(reader.Entries.Keys, k => Assert.StartsWith("transformer.", k));

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, Gpt2Checkpoint.ConfigFile)))!;
        Assert.Equal("gpt2", (string?)config["model_type"]);
        Assert.Equal("GPT2LMHeadModel", (string?)config["architectures"]![0]);
        Assert.Equal(2, (int)config["n_layer"]!);
        Assert.Equal(300, (int)config["vocab_size"]!);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AHuggingFaceStyleFileWithOrWithoutThePrefixLoadsWithIdenticalLogits(bool prefixed)
    {
        // As the hub's files: gpt2's model.safetensors has bare keys plus h.N.attn.bias mask buffers;
        // save_pretrained of GPT2LMHeadModel writes transformer.* keys; some files also carry lm_head.weight.
        using var dir = TestModels.TempDir();
        using var model = TestModels.Random();
        var config = TestModels.Tiny;
        string prefix = prefixed ? "transformer." : "";
        var tensors = model.named_parameters().Select(p => (prefix + p.name, (Tensor)p.parameter)).ToList();
        for (int layer = 0; layer < config.Layers; layer++)
            tensors.Add(($"{prefix}h.{layer}.attn.bias", ones(1, 1, config.BlockSize, config.BlockSize).tril()));
        tensors.Add(("lm_head.weight", model.TokenEmbedding));
        tensors.Reverse(); // order in the file must not matter
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), Gpt2Checkpoint.ConfigJson(config, ScalarType.Float32).ToJsonString());
        SafeTensorsWriter.Write(Path.Combine(dir.Path, "model.safetensors"), tensors);

        using var loaded = Gpt2Checkpoint.Load(dir.Path);
        using var _ = no_grad();
        Assert.Equal(TestModels.Values(model.forward(TestModels.Ids(s_ids))), TestModels.Values(loaded.forward(TestModels.Ids(s_ids))));
        Assert.Equal(ModelProvenance.Unknown, Gpt2Checkpoint.ReadProvenance(dir.Path));
    }

    [Fact]
    public void AMissingTensorIsNamedWithTheExpectedShape()
    {
        using var dir = WriteWith(tensors => tensors.RemoveAll(t => t.Name == "transformer.h.1.attn.c_attn.weight"));
        var e = Assert.Throws<InvalidDataException>(() => Gpt2Checkpoint.Load(dir.Path));
        Assert.Contains("missing transformer.h.1.attn.c_attn.weight (the model expects [64, 192])", e.Message);
    }

    [Fact]
    public void AWronglyShapedTensorIsNamedWithBothShapes()
    {
        // A Linear-layout ([out, in]) weight where GPT-2's Conv1D layout ([in, out]) belongs.
        using var dir = WriteWith(tensors =>
        {
            int i = tensors.FindIndex(t => t.Name == "transformer.h.0.attn.c_attn.weight");
            tensors[i] = (tensors[i].Name, tensors[i].Tensor.t().contiguous());
        });
        var e = Assert.Throws<InvalidDataException>(() => Gpt2Checkpoint.Load(dir.Path));
        Assert.Contains("transformer.h.0.attn.c_attn.weight has shape [192, 64], the model expects [64, 192]", e.Message);
    }

    [Fact]
    public void AnUnexpectedTensorIsNamed()
    {
        using var dir = WriteWith(tensors => tensors.Add(("transformer.h.2.ln_1.weight", ones(64))));
        var e = Assert.Throws<InvalidDataException>(() => Gpt2Checkpoint.Load(dir.Path));
        Assert.Contains("unexpected tensor transformer.h.2.ln_1.weight [64]", e.Message);
    }

    [Fact]
    public void UnsupportedGpt2VariantsAndBrokenFilesAreRefusedClearly()
    {
        using var dir = TestModels.TempDir();
        Assert.Throws<FileNotFoundException>(() => Gpt2Checkpoint.Load(dir.Path));

        var config = Gpt2Checkpoint.ConfigJson(TestModels.Tiny, ScalarType.Float32);
        config["activation_function"] = "relu";
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), config.ToJsonString());
        Assert.Contains("activation_function 'relu' is not supported", Assert.Throws<InvalidDataException>(() => Gpt2Checkpoint.ReadConfig(dir.Path)).Message);

        File.WriteAllText(Path.Combine(dir.Path, "config.json"), "{ not json");
        Assert.Contains("not valid JSON", Assert.Throws<InvalidDataException>(() => Gpt2Checkpoint.ReadConfig(dir.Path)).Message);

        File.WriteAllText(Path.Combine(dir.Path, "config.json"), Gpt2Checkpoint.ConfigJson(TestModels.Tiny, ScalarType.Float32).ToJsonString());
        File.WriteAllBytes(Path.Combine(dir.Path, "model.safetensors"), [1, 2, 3]);
        Assert.Contains("too short", Assert.Throws<InvalidDataException>(() => Gpt2Checkpoint.Load(dir.Path)).Message);
    }

    [Fact]
    public void GrowingTheVocabularyForSepInitialisesTheNewRowToTheMeanOfTheOthers()
    {
        using var dir = TestModels.TempDir();
        using var model = TestModels.Random();
        Gpt2Checkpoint.Save(model, dir.Path, new ModelProvenance("untrained", "test"));
        using var grown = Gpt2Checkpoint.Load(dir.Path, minVocabSize: 301);

        Assert.Equal(301, grown.Config.VocabSize);
        var old = TestModels.Values(model.TokenEmbedding);
        var rows = TestModels.Values(grown.TokenEmbedding);
        Assert.Equal(old, rows[..old.Length]);
        for (int c = 0; c < 64; c++)
        {
            double mean = Enumerable.Range(0, 300).Average(r => old[r * 64 + c]);
            Assert.Equal(mean, rows[300 * 64 + c], 5);
        }
    }

    [Fact]
    public void ReplacingACheckpointIsAtomic()
    {
        using var dir = TestModels.TempDir();
        string target = dir.Sub("ckpt");
        using var first = TestModels.Random(seed: 1);
        Gpt2Checkpoint.Save(first, target, new ModelProvenance("untrained", "first"));

        // A writer that dies half-way leaves the previous checkpoint whole and no staging folder behind.
        Assert.Throws<IOException>(() => AtomicWrite.Directory(target, staging =>
        {
            File.WriteAllText(Path.Combine(staging, "config.json"), "{}");
            throw new IOException("disk full");
        }));
        Assert.Equal("first", Gpt2Checkpoint.ReadProvenance(target).Description);
        Assert.Single(Directory.GetDirectories(dir.Path));

        using var second = TestModels.Random(seed: 2);
        Gpt2Checkpoint.Save(second, target, new ModelProvenance("untrained", "second"));
        Assert.Equal("second", Gpt2Checkpoint.ReadProvenance(target).Description);
        Assert.Single(Directory.GetDirectories(dir.Path));
        using var loaded = Gpt2Checkpoint.Load(target);
        Assert.Equal(TestModels.Values(second.TokenEmbedding), TestModels.Values(loaded.TokenEmbedding));
    }

    private static TestModels.TempDirectory WriteWith(Action<List<(string Name, Tensor Tensor)>> change)
    {
        var dir = TestModels.TempDir();
        using var model = TestModels.Random();
        var tensors = model.named_parameters().Select(p => ("transformer." + p.name, (Tensor)p.parameter.detach().clone())).ToList();
        change(tensors);
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), Gpt2Checkpoint.ConfigJson(TestModels.Tiny, ScalarType.Float32).ToJsonString());
        SafeTensorsWriter.Write(Path.Combine(dir.Path, "model.safetensors"), tensors);
        return dir;
    }
}
