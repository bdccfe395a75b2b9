using System.Text.Json.Nodes;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Uio;

public sealed class UioAdapterTests
{
    /// <summary>A UIO model whose every trained value differs from a fresh one: LoRA A from another seed, B and the memory embedding random.</summary>
    private static UioModel Trained(LlamaModel baseModel, UioConfig config, int seed)
    {
        var uio = new UioModel(baseModel, config, seed: 100 + seed);
        UioModelTests.Randomise(uio, seed, std: 0.05f);
        uio.MemoryEmbedding.Value.CopyFrom(new Rng(seed + 1).Normal(uio.MemoryEmbedding.Value.Length));
        return uio;
    }

    private static float[] Logits(UioModel uio, int[] segments, int[] ids)
    {
        using var tape = new Tape(uio.Accelerator);
        using var _ = tape.NoGrad();
        return uio.Decode(tape, ids, [uio.Compress(tape, segments)]).Value.ToArray();
    }

    /// <summary>Saves, reloads onto the same base, and checks parameters bit for bit and the logits exactly.</summary>
    private static void AssertRoundTrip(LlamaModel baseModel, UioConfig config, int[] segments, int[] ids)
    {
        using var dir = new TempDir();
        string folder = Path.Combine(dir.Path, "nested", "adapter");   // Save creates missing folders
        using var saved = Trained(baseModel, config, seed: 4);
        UioAdapter.Save(saved, folder);
        Assert.Equal(new[] { UioAdapter.ConfigFileName, UioAdapter.WeightsFileName },
            Directory.GetFiles(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());   // no temp files left

        Assert.Equal(config, UioAdapter.ReadConfig(folder));
        using var loaded = UioAdapter.Load(baseModel, folder);
        Assert.Equal(config, loaded.Config);
        var expected = saved.TrainableParameters().ToList();
        var actual = loaded.TrainableParameters().ToList();
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Value.Shape.ToArray(), actual[i].Value.Shape.ToArray());
            FormatsTestSupport.AssertBits(expected[i].Value.ToArray(), actual[i].Value.ToArray(), expected[i].Name ?? $"parameter {i}");
        }
        FormatsTestSupport.AssertBits(Logits(saved, segments, ids), Logits(loaded, segments, ids), "decoder logits after reload");
    }

    [Fact]
    public void RoundTripReproducesEveryParameterAndTheOutputsBitForBit()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 40);
        var config = UioModelTests.Small() with { EncoderAlpha = 0.3f, TransferAlpha = 7.1f, MemoryCapSegments = 5 };
        int[] segments = [3, 8, 12, 1, 5, 5, 30, 2, 9, 9, 14, 0, 7, 36, 4, 11];
        AssertRoundTrip(new LlamaModel(weights), config, segments, [6, 2, 19, 33]);
    }

    [DataFact]
    public void RoundTripOnStories260KReproducesParametersAndOutputs()
    {
        using var weights = GoldenGenerationTests.LoadStories260K();
        var ids = GoldenGenerationTests.ExpectedIds();
        AssertRoundTrip(new LlamaModel(weights), UioModelTests.Small(l: 16, n: 4), ids[..32], ids[32..48]);
    }

    [Fact]
    public void AFreshlyLoadedAdapterDiffersFromAFreshModelSoTheRoundTripTestCanFail()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 41);
        var baseModel = new LlamaModel(weights);
        using var trained = Trained(baseModel, UioModelTests.Small(), seed: 4);
        using var fresh = new UioModel(baseModel, UioModelTests.Small());
        foreach (var (t, f) in trained.TrainableParameters().Zip(fresh.TrainableParameters()))
            Assert.NotEqual(t.Value.ToArray(), f.Value.ToArray());
    }

    [Fact]
    public void ConfigJsonHasTheDocumentedFields()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 42);
        using var uio = new UioModel(new LlamaModel(weights), UioModelTests.Small() with { MemoryCapSegments = 3 });
        using var dir = new TempDir();
        UioAdapter.Save(uio, dir.Path, "karpathy/tinyllamas");
        var json = JsonNode.Parse(File.ReadAllText(dir.File(UioAdapter.ConfigFileName)))!;

        Assert.Equal("UIO", (string?)json["peft_type"]);
        Assert.Equal("karpathy/tinyllamas", (string?)json["base_model_name_or_path"]);
        Assert.Equal(2, (int)json["r"]!["encoder"]!);
        Assert.Equal(3, (int)json["r"]!["transfer"]!);
        Assert.Equal(4.0, (double)json["lora_alpha"]!["encoder"]!);
        Assert.Equal(3.0, (double)json["lora_alpha"]!["transfer"]!);
        Assert.Equal(new[] { "q_proj", "v_proj" }, json["target_modules"]!["encoder"]!.AsArray().Select(n => (string)n!).ToArray());
        Assert.Equal(new[] { "k_proj", "v_proj" }, json["target_modules"]!["transfer"]!.AsArray().Select(n => (string)n!).ToArray());

        var u = json["uio"]!;
        Assert.Equal(8, (int)u["segment_length"]!);
        Assert.Equal(2, (int)u["memory_tokens"]!);
        Assert.Equal(2, (int)u["encoder_rank"]!);
        Assert.Equal(4.0, (double)u["encoder_alpha"]!);
        Assert.Equal(3, (int)u["transfer_rank"]!);
        Assert.Equal(3.0, (double)u["transfer_alpha"]!);
        Assert.Equal(3, (int)u["memory_cap_segments"]!);

        var c = weights.Config;
        var shape = json["base_model_shape"]!;
        Assert.Equal(c.Dim, (int)shape["hidden_size"]!);
        Assert.Equal(c.Layers, (int)shape["num_hidden_layers"]!);
        Assert.Equal(c.Heads, (int)shape["num_attention_heads"]!);
        Assert.Equal(c.KvHeads, (int)shape["num_key_value_heads"]!);
        Assert.Equal(c.VocabSize, (int)shape["vocab_size"]!);

        // Without a base name the field is an explicit null.
        UioAdapter.Save(uio, dir.Path);
        var again = JsonNode.Parse(File.ReadAllText(dir.File(UioAdapter.ConfigFileName)))!.AsObject();
        Assert.True(again.ContainsKey("base_model_name_or_path"));
        Assert.Null(again["base_model_name_or_path"]);
        Assert.Null(UioAdapter.ReadManifest(dir.Path).BaseModelNameOrPath);
    }

    [Fact]
    public void TensorsHaveThePeftStyleNamesAndShapes()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 43);
        using var uio = new UioModel(new LlamaModel(weights), UioModelTests.Small());
        using var dir = new TempDir();
        UioAdapter.Save(uio, dir.Path);
        var file = SafetensorsFile.Read(dir.File(UioAdapter.WeightsFileName));
        var c = weights.Config;
        Assert.Equal(c.Layers * 8 + 1, file.Tensors.Count);
        Assert.All(file.Tensors, t => Assert.Equal(SafetensorsDType.F32, t.DType));
        Assert.Equal([2L, c.Dim], file.Find("base_model.model.model.layers.1.self_attn.q_proj.encoder.lora_A.weight")!.Shape);
        Assert.Equal([(long)c.Dim, 2], file.Find("base_model.model.model.layers.1.self_attn.q_proj.encoder.lora_B.weight")!.Shape);
        Assert.Equal([(long)c.KvDim, 2], file.Find("base_model.model.model.layers.0.self_attn.v_proj.encoder.lora_B.weight")!.Shape);
        Assert.Equal([3L, c.Dim], file.Find("base_model.model.model.layers.0.self_attn.k_proj.transfer.lora_A.weight")!.Shape);
        Assert.Equal([(long)c.KvDim, 3], file.Find("base_model.model.model.layers.1.self_attn.v_proj.transfer.lora_B.weight")!.Shape);
        Assert.Equal([1L, c.Dim], file.Find("uio.memory_embedding")!.Shape);
    }

    /// <summary>An adapter saved from a tiny model with <paramref name="change"/> applied to the base config is loaded onto the plain tiny base.</summary>
    private static void AssertOtherBaseFails(Func<LlamaConfig, LlamaConfig> change, params string[] fragments)
    {
        using var other = GradCheck.RandomWeights(change(GradCheck.TinyConfig()), seed: 44);
        using var target = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 45);
        using var uio = new UioModel(new LlamaModel(other), UioModelTests.Small());
        using var dir = new TempDir();
        UioAdapter.Save(uio, dir.Path);
        FormatsTestSupport.AssertFormatError(() => UioAdapter.Load(new LlamaModel(target), dir.Path),
            [UioAdapter.ConfigFileName, .. fragments]);
    }

    [Fact]
    public void LoadingOntoABaseWithAnotherLayerCountFails() =>
        AssertOtherBaseFails(c => c with { Layers = 3 }, "num_hidden_layers", "is 3", "num_hidden_layers 2");

    [Fact]
    public void LoadingOntoABaseWithAnotherWidthFails() =>
        AssertOtherBaseFails(c => c with { Dim = 32, HiddenDim = 40 }, "hidden_size", "is 32", "hidden_size 16");

    [Fact]
    public void LoadingOntoABaseWithOtherKvHeadsOrVocabularyFails()
    {
        AssertOtherBaseFails(c => c with { KvHeads = 4 }, "num_key_value_heads", "is 4");
        AssertOtherBaseFails(c => c with { VocabSize = 50 }, "vocab_size", "is 50");
    }

    /// <summary>A saved tiny adapter folder plus the base it was saved from.</summary>
    private sealed class SavedAdapter : IDisposable
    {
        public SavedAdapter()
        {
            Weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 46);
            Base = new LlamaModel(Weights);
            using var uio = Trained(Base, UioModelTests.Small(), seed: 7);
            UioAdapter.Save(uio, Dir.Path);
        }

        public TempDir Dir { get; } = new();
        public LlamaWeights Weights { get; }
        public LlamaModel Base { get; }
        public string ConfigPath => Dir.File(UioAdapter.ConfigFileName);
        public string WeightsPath => Dir.File(UioAdapter.WeightsFileName);

        /// <summary>Rewrites adapter_config.json after <paramref name="edit"/>.</summary>
        public void EditConfig(Action<JsonObject> edit)
        {
            var json = JsonNode.Parse(File.ReadAllText(ConfigPath))!.AsObject();
            edit(json);
            File.WriteAllText(ConfigPath, json.ToJsonString());
        }

        /// <summary>Rewrites the weights with <paramref name="edit"/> applied to the saved entries.</summary>
        public void EditTensors(Func<List<SafetensorsEntry>, List<SafetensorsEntry>> edit)
        {
            var file = SafetensorsFile.Read(WeightsPath);
            var entries = file.Tensors.Select(t => SafetensorsEntry.FromArray(t.Name, t.Shape.Select(d => (int)d).ToArray(), file.ReadTensor(t))).ToList();
            SafetensorsWriter.Write(WeightsPath, edit(entries));
        }

        public void AssertLoadFails(params string[] fragments) =>
            FormatsTestSupport.AssertFormatError(() => UioAdapter.Load(Base, Dir.Path), fragments);

        public void Dispose()
        {
            Dir.Dispose();
            Weights.Dispose();
        }
    }

    [Fact]
    public void TheRewrittenUneditedAdapterStillLoads()
    {
        using var saved = new SavedAdapter();
        saved.EditConfig(_ => { });
        saved.EditTensors(e => e);
        using var uio = UioAdapter.Load(saved.Base, saved.Dir.Path);
        Assert.Equal(UioModelTests.Small(), uio.Config);
    }

    [Fact]
    public void MissingFilesAreNamed()
    {
        using var saved = new SavedAdapter();
        File.Delete(saved.WeightsPath);
        saved.AssertLoadFails(UioAdapter.WeightsFileName, "missing");
        File.Delete(saved.ConfigPath);
        saved.AssertLoadFails(UioAdapter.ConfigFileName, "missing");
        FormatsTestSupport.AssertFormatError(() => UioAdapter.ReadConfig(saved.Dir.Path), UioAdapter.ConfigFileName, "missing");
        FormatsTestSupport.AssertFormatError(() => UioAdapter.ReadConfig(Path.Combine(saved.Dir.Path, "absent")), UioAdapter.ConfigFileName);
    }

    [Fact]
    public void CorruptedConfigIsReported()
    {
        using var saved = new SavedAdapter();
        string text = File.ReadAllText(saved.ConfigPath);
        File.WriteAllText(saved.ConfigPath, text[..(text.Length / 2)]);
        saved.AssertLoadFails(UioAdapter.ConfigFileName, "not valid JSON");
        File.WriteAllText(saved.ConfigPath, "[1, 2]");
        saved.AssertLoadFails(UioAdapter.ConfigFileName, "expected an object");
    }

    [Theory]
    [InlineData("peft_type", "LORA", "'peft_type' is 'LORA', expected 'UIO'")]
    [InlineData("uio.memory_tokens", null, "'uio.memory_tokens' is missing")]
    [InlineData("uio.segment_length", 7, "divisible")]
    [InlineData("uio.encoder_alpha", "four", "'uio.encoder_alpha'")]
    [InlineData("uio.memory_cap_segments", -2, "memory cap")]
    [InlineData("uio.encoder_rank", 17, "'r.encoder' is 2, but 'uio.encoder_rank' is 17")]
    [InlineData("r.transfer", 4, "'r.transfer' is 4, but 'uio.transfer_rank' is 3")]
    [InlineData("lora_alpha.encoder", 5, "'lora_alpha.encoder' is 5, but 'uio.encoder_alpha' is 4")]
    [InlineData("base_model_shape.vocab_size", null, "'base_model_shape.vocab_size' is missing")]
    [InlineData("base_model_shape.hidden_size", 0, "'base_model_shape.hidden_size' is 0")]
    [InlineData("uio", null, "'uio' is missing")]
    public void BadConfigFieldsAreNamed(string field, object? value, string fragment)
    {
        using var saved = new SavedAdapter();
        saved.EditConfig(json =>
        {
            string[] path = field.Split('.');
            var parent = path.Length == 1 ? json : json[path[0]]!.AsObject();
            if (value is null) parent.Remove(path[^1]);
            else parent[path[^1]] = value switch
            {
                int i => JsonValue.Create(i),
                string s => JsonValue.Create(s),
                _ => throw new ArgumentException($"unsupported test value {value}"),
            };
        });
        saved.AssertLoadFails(UioAdapter.ConfigFileName, fragment);
    }

    [Fact]
    public void RanksWiderThanTheBaseAreRejected()
    {
        using var saved = new SavedAdapter();
        saved.EditConfig(json =>
        {
            json["uio"]!["encoder_rank"] = 17;
            json["r"]!["encoder"] = 17;
        });
        // The file alone is consistent; only the base model (width 16) rules it out.
        Assert.Equal(17, UioAdapter.ReadConfig(saved.Dir.Path).EncoderRank);
        saved.AssertLoadFails(UioAdapter.ConfigFileName, "must not exceed the model width 16");
    }

    [Fact]
    public void WrongTargetModulesAreNamed()
    {
        using var saved = new SavedAdapter();
        saved.EditConfig(json => json["target_modules"]!["encoder"] = new JsonArray("q_proj", "o_proj"));
        saved.AssertLoadFails(UioAdapter.ConfigFileName, "target_modules.encoder", "o_proj", "expected [q_proj, v_proj]");
    }

    [Theory]
    [InlineData("base_model.model.model.layers.1.self_attn.k_proj.transfer.lora_B.weight")]
    [InlineData("base_model.model.model.layers.0.self_attn.v_proj.encoder.lora_A.weight")]
    [InlineData(UioAdapter.MemoryEmbeddingName)]
    public void MissingTensorIsNamed(string name)
    {
        using var saved = new SavedAdapter();
        saved.EditTensors(e => e.Where(t => t.Name != name).ToList());
        saved.AssertLoadFails(UioAdapter.WeightsFileName, name, "missing");
    }

    [Fact]
    public void TensorOfTheWrongShapeIsNamed()
    {
        using var saved = new SavedAdapter();
        const string name = "base_model.model.model.layers.0.self_attn.q_proj.encoder.lora_A.weight";
        // The config still says encoder rank 2, but this tensor was written with rank 4.
        saved.EditTensors(e => e.Select(t => t.Name == name ? SafetensorsEntry.FromArray(name, [4, 16], new float[64]) : t).ToList());
        saved.AssertLoadFails(UioAdapter.WeightsFileName, name, "[4, 16]", "expected [2, 16]");
    }

    [Fact]
    public void UnexpectedExtraTensorIsNamed()
    {
        using var saved = new SavedAdapter();
        const string name = "base_model.model.model.layers.2.self_attn.q_proj.encoder.lora_A.weight";
        saved.EditTensors(e => [.. e, SafetensorsEntry.FromArray(name, [2, 16], new float[32])]);
        saved.AssertLoadFails(UioAdapter.WeightsFileName, name, "unexpected");
    }

    [Fact]
    public void TruncatedWeightsFileIsReported()
    {
        using var saved = new SavedAdapter();
        var bytes = File.ReadAllBytes(saved.WeightsPath);
        File.WriteAllBytes(saved.WeightsPath, bytes[..(bytes.Length - 10)]);
        saved.AssertLoadFails(UioAdapter.WeightsFileName);
    }

    [Fact]
    public void SaveOverwritesAnEarlierAdapter()
    {
        using var saved = new SavedAdapter();
        using var other = Trained(saved.Base, UioModelTests.Small(l: 4, n: 4), seed: 9);
        UioAdapter.Save(other, saved.Dir.Path);
        using var loaded = UioAdapter.Load(saved.Base, saved.Dir.Path);
        Assert.Equal(other.Config, loaded.Config);
        FormatsTestSupport.AssertBits(other.MemoryEmbedding.Value.ToArray(), loaded.MemoryEmbedding.Value.ToArray(), "memory embedding");
    }

    [Fact]
    public void ArgumentsAreChecked()
    {
        Assert.Throws<ArgumentNullException>(() => UioAdapter.Save(null!, Path.GetTempPath()));
        Assert.ThrowsAny<ArgumentException>(() => UioAdapter.ReadConfig(""));
        using var saved = new SavedAdapter();
        Assert.Throws<ArgumentNullException>(() => UioAdapter.Load(null!, saved.Dir.Path));
    }
}
