using System.Text.Json;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Formats;

/// <summary>
/// The model families a config.json can name: each config below is the real file of a released model
/// (Llama 3.2 1B, Qwen2.5 0.5B, Mistral 7B v0.1) with only the sizes shrunk, loaded with random weights, run
/// against the plain reference, saved and reloaded.
/// </summary>
public class ModelFamilyTests
{
    // meta-llama/Llama-3.2-1B config.json, sizes shrunk (rope_scaling and every other field as released).
    private const string Llama32 = """
        {
          "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 60,
          "eos_token_id": 61, "head_dim": 8, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02,
          "intermediate_size": 64, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
          "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
          "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
          "use_cache": true, "vocab_size": 64
        }
        """;

    // Qwen/Qwen2.5-0.5B config.json, sizes shrunk: q/k/v biases, tied embeddings, sliding window off.
    private const string Qwen25 = """
        {
          "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 60, "eos_token_id": 61,
          "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 48,
          "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 4,
          "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
          "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.40.1",
          "use_cache": true, "use_sliding_window": false, "vocab_size": 64
        }
        """;

    // mistralai/Mistral-7B-v0.1 config.json, sizes shrunk; the window (4) is shorter than the test sequences.
    private const string Mistral = """
        {
          "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
          "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 56, "max_position_embeddings": 64,
          "model_type": "mistral", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
          "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4, "tie_word_embeddings": false,
          "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 64
        }
        """;

    public static TheoryData<string> Families() => new() { "llama3", "qwen2", "mistral" };

    private static string Json(string family) => family switch
    {
        "llama3" => Llama32,
        "qwen2" => Qwen25,
        _ => Mistral,
    };

    [Fact]
    public void Configs_map_onto_the_engine()
    {
        var llama = HfConfig.Parse(Llama32);
        Assert.Equal(new RopeScaling(RopeScalingKind.Llama3, 32, 8192, LowFreqFactor: 1, HighFreqFactor: 4), llama.RopeScaling);
        Assert.Equal((500000f, true, false, 0), (llama.RopeTheta, llama.TiedEmbeddings, llama.AttentionBias, llama.LocalLayers));
        var qwen = HfConfig.Parse(Qwen25);
        Assert.Equal((true, true, 0, 1e6f, 1e-6f), (qwen.AttentionBias, qwen.TiedEmbeddings, qwen.LocalLayers, qwen.RopeTheta, qwen.NormEps));
        var mistral = HfConfig.Parse(Mistral);
        Assert.Equal((2, 4, false), (mistral.LocalLayers, mistral.LocalWindow, mistral.AttentionBias));
        // A window as long as the context is no window.
        Assert.Equal(0, HfConfig.Parse(Mistral.Replace("\"sliding_window\": 4", "\"sliding_window\": 64")).LocalLayers);
    }

    [Fact]
    public void Llama3_frequencies_follow_transformers()
    {
        var c = HfConfig.Parse(Llama32);
        var table = RopeTable.Create(c.HeadDim, c.RopeTheta, c.RopeScaling);
        var plain = RopeTable.Create(c.HeadDim, c.RopeTheta);
        for (int i = 0; i < c.HeadDim / 2; i++)
            Assert.Equal(LlamaReference.InverseFrequency(c, i, c.HeadDim), table.InverseFrequency[i], 1e-15);
        // With theta 5e5 and head_dim 8 the four wavelengths fall in every band: kept, kept, blended, divided by 32.
        Assert.Equal(plain.InverseFrequency[0], table.InverseFrequency[0]);
        Assert.Equal(plain.InverseFrequency[1], table.InverseFrequency[1]);
        Assert.InRange(table.InverseFrequency[2], plain.InverseFrequency[2] / 32 * 1.0001, plain.InverseFrequency[2] * 0.9999);
        Assert.Equal(plain.InverseFrequency[3] / 32, table.InverseFrequency[3], 1e-18);
        // The config.json form survives a write.
        Assert.Equal(c, HfConfig.Parse(HfConfig.ToJson(c)));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void A_tiny_random_model_loads_runs_saves_and_reloads(string family)
    {
        using var dir = new TempDir();
        string folder = dir.File(family);
        Directory.CreateDirectory(folder);
        var config = HfConfig.Parse(Json(family));
        using (var made = GradCheck.RandomWeights(config, seed: 301))
        {
            // The family's own config.json text, and the tensors under their Hugging Face names.
            File.WriteAllText(Path.Combine(folder, "config.json"), Json(family));
            SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), made.Named().Select(x => SafetensorsEntry.FromTensor(x.Name, x.Tensor)).ToList());
            if (family == "qwen2") Assert.Contains(made.Named(), x => x.Name == "model.layers.1.self_attn.k_proj.bias");
        }

        using var weights = ModelLoader.Load(folder, TestBackend.Shared);
        Assert.Equal(config, weights.Config);
        var model = new LlamaModel(weights);
        int[] ids = [60, 5, 17, 33, 2, 9, 41, 12, 7, 50];
        var expected = LlamaReference.Logits(weights, ids).Cast<double>().ToArray();
        var logits = Logits(model, ids);
        Check.Close(expected, logits, 1e-4, 1e-4, $"{family} logits");

        // Tape-free decoding through the KV cache gives the same last-token logits.
        using (var cache = model.NewCache(32))
        using (var buffers = model.NewInferenceBuffers(4))
        {
            var last = model.Infer(ids, cache, buffers).ToArray();
            Check.Close(expected.AsSpan(expected.Length - config.VocabSize), last, 1e-4, 1e-4, $"{family} cached decode");
        }
        var generated = new List<int>();
        new Generator(model).Generate(ids[..3], new GenerationOptions { MaxNewTokens = 8, Temperature = 0 }, generated.Add);
        Assert.NotEmpty(generated);

        string saved = dir.File(family + "-saved");
        HfCheckpoint.Save(weights, saved);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(saved, "config.json")));
        string expectedType = family == "llama3" ? "llama" : family;
        Assert.Equal(expectedType, json.RootElement.GetProperty("model_type").GetString());
        using var again = ModelLoader.Load(saved, TestBackend.Shared);
        FormatsTestSupport.AssertBitEqual(weights, again);
        Assert.Equal(logits, Logits(new LlamaModel(again), ids));
    }

    [Fact]
    public void Qwen2_bias_gradients_match_finite_differences()
    {
        var config = HfConfig.Parse(Qwen25);
        using var weights = GradCheck.RandomWeights(config, seed: 302);
        var model = new LlamaModel(weights, trainable: true);
        int[] ids = [3, 9, 27, 1, 30], targets = [9, 27, 1, 30, 4];
        var biases = model.Blocks.SelectMany(b => new[] { b.Attention.Q.Bias!, b.Attention.K.Bias!, b.Attention.V.Bias! }).ToList();
        Assert.Contains(biases[0], model.WeightParameters());
        double Loss()
        {
            using var tape = new Tape(model.Accelerator);
            using var _ = tape.NoGrad();
            return model.Loss(tape, ids, targets).Value.ToArray()[0];
        }
        using (var tape = new Tape(model.Accelerator)) tape.Backward(model.Loss(tape, ids, targets));
        GradCheck.PerTensor(Loss, biases, new Rng(5), eps: 1e-2, tol: 2e-2, "qwen2 q/k/v biases");
    }

    [Theory]
    [InlineData("\"use_sliding_window\": false", "\"use_sliding_window\": true", "use_sliding_window is true")]
    [InlineData("\"model_type\": \"qwen2\"", "\"model_type\": \"qwen2\", \"attention_bias\": true", "attention_bias is true")]
    [InlineData("\"model_type\": \"qwen2\"", "\"model_type\": \"qwen3\"", "model_type 'qwen3' is not supported")]
    public void Unsupported_qwen_fields_are_named(string find, string replace, string fragment) =>
        FormatsTestSupport.AssertFormatError(() => HfConfig.Parse(Qwen25.Replace(find, replace), "q/config.json"), "q/config.json", fragment);

    [Theory]
    [InlineData("\"low_freq_factor\": 1.0", "\"low_freq_factor\": 5.0", "low_freq_factor 5")]
    [InlineData("\"original_max_position_embeddings\": 8192, ", "", "rope_scaling.original_max_position_embeddings' is missing")]
    [InlineData("\"mlp_bias\": false", "\"mlp_bias\": true", "mlp_bias is true")]
    public void Unsupported_llama3_fields_are_named(string find, string replace, string fragment) =>
        FormatsTestSupport.AssertFormatError(() => HfConfig.Parse(Llama32.Replace(find, replace), "l/config.json"), "l/config.json", fragment);

    [Fact]
    public void Formats_that_cannot_hold_biases_or_windows_refuse_them()
    {
        using var dir = new TempDir();
        using var qwen = GradCheck.RandomWeights(HfConfig.Parse(Qwen25), seed: 303);
        Assert.Contains("biases", Assert.Throws<NotSupportedException>(() => Llama2cCheckpoint.Save(qwen, dir.File("q.bin"))).Message);
        Assert.False(File.Exists(dir.File("q.bin")));
        using var mistral = GradCheck.RandomWeights(HfConfig.Parse(Mistral), seed: 304);
        Assert.Contains("LocalLayers", Assert.Throws<NotSupportedException>(() => Llama2cCheckpoint.Save(mistral, dir.File("m.bin"))).Message);
        // Local layers below the top are no family's form.
        var partial = HfConfig.Parse(Mistral) with { LocalLayers = 1 };
        Assert.Contains("LocalLayers", Assert.Throws<NotSupportedException>(() => HfConfig.ToJson(partial)).Message);
    }

    private static float[] Logits(LlamaModel model, int[] ids)
    {
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        return model.Forward(tape, ids).Value.ToArray();
    }
}
