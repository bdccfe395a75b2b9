using UioLlm.Tests.Cli;
using System.Text.Json.Nodes;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;
using UioLlm.Training;

namespace UioLlm.Tests.Reliability;

/// <summary>The cases of issue 15 (and the failures the fuzzer found), each a typed error that names the file and the field.</summary>
public class ReliabilityTests
{
    private static (int Code, string Out, string Err) Cli(params string[] args) => CliHarness.Run(args);

    private static void AssertOneLine(string error)
    {
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line, got:\n{error}");
        Assert.DoesNotContain("   at ", error);
    }

    [Theory]
    [InlineData(0, 4)]
    [InlineData(4, 0)]
    public void ZeroHeadsIsAFieldErrorNotADivisionByZero(int heads, int kvHeads)
    {
        var config = new LlamaConfig { Dim = 16, HiddenDim = 24, Layers = 1, Heads = heads, KvHeads = kvHeads, VocabSize = 10 };
        var e = Assert.Throws<ArgumentException>(() => config.Validate("model.bin"));
        Assert.Contains("heads", e.Message);
        Assert.Contains("model.bin", e.Message);
        Assert.Equal(0, heads == 0 ? config.HeadDim : config.GroupSize);
        Assert.Contains("Heads", config.ToString());   // the record's printer no longer divides by zero
    }

    [Fact]
    public void Llama2cHeaderWithZeroHeadsIsRefusedByTheLoaderAndTheCli()
    {
        using var dir = new TempDir();
        string path = dir.File("zero-heads.bin");
        using (var w = new BinaryWriter(File.Create(path)))
        {
            foreach (int v in new[] { 16, 24, 1, 0, 0, 10, 32 }) w.Write(v);
            w.Write(new byte[4096]);
        }
        var e = FormatsTestSupport.AssertFormatError(() => Llama2cCheckpoint.Load(path, TestBackend.Shared), "heads");
        Assert.Contains(path, e.Message);
        var (code, _, error) = Cli("info", path);
        Assert.Equal(2, code);
        Assert.Contains("heads", error);
        AssertOneLine(error);
    }

    [Fact]
    public void HfConfigRefusesRopeThetaOfOneAndZeroHeads()
    {
        string json = """{"model_type": "llama", "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 10, "rope_theta": 1}""";
        var e = Assert.Throws<ModelFormatException>(() => HfConfig.Parse(json, "config.json"));
        Assert.Contains("rope_theta", e.Message);
        e = Assert.Throws<ModelFormatException>(() => HfConfig.Parse(json.Replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 0"), "config.json"));
        Assert.Contains("heads", e.Message);
    }

    private static string TokenizerJson(JsonObject vocab, JsonArray? added = null) => new JsonObject
    {
        ["added_tokens"] = added ?? new JsonArray(),
        ["normalizer"] = null,
        ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
        ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray() },
    }.ToJsonString();

    private static JsonObject ByteVocab()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
        return vocab;
    }

    [Theory]
    [InlineData(int.MaxValue)]
    [InlineData(1_000_000_000)]
    public void TokenizerJsonWithAHugeIdIsRefusedWithoutAllocatingForIt(int id)
    {
        using var dir = new TempDir();
        var vocab = ByteVocab();
        vocab["huge"] = id;
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, TokenizerJson(vocab));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(path));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 50_000_000, "the reader allocated for the huge id");
        Assert.Contains(path, e.Message);
        Assert.Contains($"{id}", e.Message);
        // tokenizer.json goes through the Hugging Face reader, which bounds ids before it allocates anything.
        Assert.Contains("expected an integer in [0, ", e.Message);
    }

    [Fact]
    public void EncoderJsonWithAHugeIdAndNegativeAddedTokenIdsAreRefused()
    {
        using var dir = new TempDir();
        var vocab = ByteVocab();
        vocab["x"] = int.MaxValue;
        File.WriteAllText(dir.File("encoder.json"), vocab.ToJsonString());
        File.WriteAllText(dir.File("vocab.bpe"), "#version: 0.2\n");
        Assert.Throws<ModelFormatException>(() => Tokenizer.Load(dir.File("encoder.json")));

        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, TokenizerJson(ByteVocab(), new JsonArray(new JsonObject { ["id"] = -5, ["content"] = "<bad>" })));
        var e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(path));
        Assert.Contains("added_tokens[0]", e.Message);
        Assert.Contains("-5", e.Message);
    }

    [Fact]
    public void InvalidUtf8InASafetensorsHeaderNamesTheFile()
    {
        using var dir = new TempDir();
        string path = dir.File("model.safetensors");
        byte[] header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"__metadata__\":{\"k\":\"\xFF\"}}"u8.ToArray();
        header[^4] = 0xFF;
        using (var w = new BinaryWriter(File.Create(path)))
        {
            w.Write((long)header.Length);
            w.Write(header);
            w.Write(new byte[4]);
        }
        var e = Assert.Throws<ModelFormatException>(() => SafetensorsFile.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("UTF-8", e.Message);
    }

    // Found by the fuzzer: System.Text.Json reads invalid UTF-8 inside a string only when the string is read,
    // and then throws an InvalidOperationException that names no file.
    [Fact]
    public void InvalidUtf8InTokenizerJsonNamesTheFile()
    {
        using var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        byte[] json = System.Text.Encoding.UTF8.GetBytes(TokenizerJson(ByteVocab()));
        int at = Array.IndexOf(json, (byte)'"', Array.IndexOf(json, (byte)'v')) + 1;
        json[at] = 0xC3;
        json[at + 1] = 0x28;   // a lead byte followed by a non-continuation byte
        File.WriteAllBytes(path, json);
        var e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(path));
        Assert.Contains("UTF-8", e.Message);
        Assert.Contains(path, e.Message);
    }

    // Found by the fuzzer: a config.json declaring a model far larger than its safetensors reached the
    // allocator ("parameters exceed one tensor's limit", an ArgumentException naming no file).
    [Fact]
    public void AnHfConfigLargerThanItsWeightsIsRefusedBeforeAllocating()
    {
        using var dir = new TempDir();
        using var weights = FormatsTestSupport.RandomWeights(TestBackend.Shared);
        string hf = Path.Combine(dir.Path, "hf");
        HfCheckpoint.Save(weights, hf);
        string config = Path.Combine(hf, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!;
        json["hidden_size"] = 65536;
        json["num_attention_heads"] = 512;
        json["num_key_value_heads"] = 512;
        File.WriteAllText(config, json.ToJsonString());
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ModelFormatException>(() => HfCheckpoint.Load(hf, TestBackend.Shared));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 50_000_000);
        Assert.Contains("config.json", e.Message);
        Assert.Contains("parameters", e.Message);
    }

    [Fact]
    public void NonFiniteWeightsAreFoundOnLoadNamingTheTensorAndIndex()
    {
        using var dir = new TempDir();
        using var weights = FormatsTestSupport.RandomWeights(TestBackend.Shared);
        weights.Layers[1].Wq.Span[5 * weights.Config.Dim + 3] = float.NaN;
        string bin = dir.File("nan.bin");
        Llama2cCheckpoint.Save(weights, bin);
        var e = Assert.Throws<ModelFormatException>(() => Llama2cCheckpoint.Load(bin, TestBackend.Shared));
        Assert.Contains("layers.1.self_attn.q_proj.weight", e.Message);
        Assert.Contains("NaN", e.Message);
        Assert.Contains("[5, 3]", e.Message);

        weights.Layers[1].Wq.Span[5 * weights.Config.Dim + 3] = 0;
        weights.FinalNorm.Span[2] = float.PositiveInfinity;
        string hf = Path.Combine(dir.Path, "hf");
        HfCheckpoint.Save(weights, hf);
        e = Assert.Throws<ModelFormatException>(() => HfCheckpoint.Load(hf, TestBackend.Shared));
        Assert.Contains("norm.weight", e.Message);
        Assert.Contains("+Inf", e.Message);
        var (code, _, error) = Cli("generate", "--model", hf, "--tokenizer", bin);
        Assert.Equal(2, code);
        AssertOneLine(error);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void SamplingAndScoringStopOnNonFiniteLogits(float bad)
    {
        var logits = new float[40];
        logits[17] = bad;
        var e = Assert.Throws<NonFiniteException>(() => new Sampler(temperature: 0).Sample(logits));
        Assert.Contains("vocabulary id 17", e.Message);
        Assert.Throws<NonFiniteException>(() => new Sampler(temperature: 0.8f, topP: 0.9f).Sample(logits));
        Assert.Throws<NonFiniteException>(() => UioLlm.Model.Uio.UioSession.LogSoftmaxAt(logits, 3));
    }

    [Fact]
    public void GenerationWithAModelThatOverflowsStopsWithAClearMessage()
    {
        using var weights = FormatsTestSupport.RandomWeights(TestBackend.Shared);
        // Finite weights whose products overflow float32: the logits become infinite.
        weights.FinalNorm.Span.Fill(1e38f);
        foreach (var (name, t) in weights.Named())
            if (name.Contains("lm_head")) t.Span.Fill(1e38f);
        var model = new LlamaModel(weights);
        var e = Assert.Throws<NonFiniteException>(() => new Generator(model).Generate([1, 2], new GenerationOptions { MaxNewTokens = 3, Temperature = 0 }));
        Assert.Contains("non-finite", e.Message);
    }

    [Fact]
    public void NonFiniteScanFindsTheFirstBadValueAtEveryPosition()
    {
        for (int n = 0; n < 40; n++)
            for (int at = 0; at <= n; at++)
            {
                var values = Enumerable.Range(0, n).Select(i => (float)i).ToArray();
                if (at < n) values[at] = at % 3 == 0 ? float.NaN : at % 3 == 1 ? float.PositiveInfinity : float.NegativeInfinity;
                Assert.Equal(at < n ? at : -1, NonFinite.FirstIndex(values));
            }
    }

    [Fact]
    public void ArgumentParsingErrorsExitWithCodeTwo()
    {
        var (code, _, error) = Cli("generate", "--max-tokens", "many", "--model", "x");
        Assert.Equal(2, code);
        Assert.Contains("--max-tokens", error);
        AssertOneLine(error);
        (code, _, error) = Cli("train", "--model", "x");
        Assert.Equal(2, code);
        Assert.Contains("--data", error);
        (code, _, _) = Cli("frobnicate");
        Assert.Equal(2, code);
    }

    [DataFact]
    public void NonsenseNumbersAndPathsAreOneLineErrorsWithCodeTwo()
    {
        string model = TestData.File("models", "stories260K", "stories260K.bin"), tok = TestData.File("models", "stories260K", "tok512.bin");
        string text = TestData.File("text", "moby_dick_ch1.txt");
        using var dir = new TempDir();
        string[] Train(params string[] extra) => ["train", "--model", model, "--tokenizer", tok, "--data", text, .. extra];

        var (code, _, error) = Cli(Train("--out", dir.File("run"), "--lr", "NaN"));
        Assert.Equal(2, code);
        Assert.Contains("--lr", error);
        AssertOneLine(error);

        File.WriteAllText(dir.File("a-file"), "x");
        (code, _, error) = Cli(Train("--out", dir.File("a-file")));
        Assert.Equal(2, code);
        Assert.Contains("is a file", error);
        AssertOneLine(error);

        (code, _, error) = Cli(Train("--out", "/proc/uio-run"));
        Assert.Equal(2, code);
        Assert.Contains("--out", error);
        AssertOneLine(error);

        (code, _, error) = Cli("generate", "--model", model, "--tokenizer", tok, "--prompt-file", dir.Path);
        Assert.Equal(2, code);
        Assert.Contains("is a folder", error);
        AssertOneLine(error);

        (code, _, error) = Cli(Train("--out", dir.File("run2"), "--max-memory", "lots"));
        Assert.Equal(2, code);
        Assert.Contains("--max-memory", error);
    }
}
