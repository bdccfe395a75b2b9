using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using static UioLlm.Tests.Formats.FormatsTestSupport;

namespace UioLlm.Tests.Formats;

public class HfConfigTests
{
    // The shape of meta-llama/Llama-2-7b-hf's config.json.
    private const string Llama2 = """
        {
          "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
          "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
          "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
          "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "tie_word_embeddings": false,
          "torch_dtype": "float16", "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000
        }
        """;

    private static string With(string extra) => Llama2.TrimEnd().TrimEnd('}') + ", " + extra + "}";

    [Fact]
    public void Parses_a_llama2_config()
    {
        var c = HfConfig.Parse(Llama2);
        Assert.Equal((4096, 11008, 32, 32, 32, 32000, 4096), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.Equal((1e-5f, 10000f, false, 1, 2), (c.NormEps, c.RopeTheta, c.TiedEmbeddings, c.BosId, c.EosId));
        Assert.Null(c.RopeScaling);
    }

    [Fact]
    public void Defaults_lists_and_mistral_are_understood()
    {
        var c = HfConfig.Parse("""
            {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "vocab_size": 100, "eos_token_id": [7, 9], "sliding_window": null, "tie_word_embeddings": true,
             "rope_theta": 1000000.0}
            """);
        Assert.Equal((4, 2048, 1e-6f, 1000000f, true, 1, 7), (c.KvHeads, c.MaxSeqLen, c.NormEps, c.RopeTheta, c.TiedEmbeddings, c.BosId, c.EosId));
    }

    [Theory]
    [InlineData("\"rope_scaling\": {\"type\": \"linear\", \"factor\": 4.0}", RopeScalingKind.Linear, 4.0, 4096)]
    [InlineData("\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2}", RopeScalingKind.DynamicNtk, 2.0, 4096)]
    [InlineData("\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 8, \"original_max_position_embeddings\": 2048}", RopeScalingKind.Yarn, 8.0, 2048)]
    public void Rope_scaling_is_mapped(string json, RopeScalingKind kind, double factor, int original)
    {
        var c = HfConfig.Parse(With(json).Replace("\"rope_scaling\": null, ", ""));
        Assert.Equal(new RopeScaling(kind, factor, original), c.RopeScaling);
    }

    [Theory]
    [InlineData("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", "model_type 'gpt2' is not supported")]
    [InlineData("\"hidden_size\": 4096,", "", "field 'hidden_size' is missing")]
    [InlineData("\"hidden_size\": 4096", "\"hidden_size\": \"big\"", "field 'hidden_size' is \"big\", expected an integer")]
    [InlineData("\"num_key_value_heads\": 32", "\"num_key_value_heads\": 5", "kv_heads")]
    [InlineData("\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"longrope\", \"factor\": 8}", "rope_scaling type 'longrope' is not supported")]
    [InlineData("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\"}", "field 'rope_scaling.factor' is missing")]
    [InlineData("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act 'gelu'")]
    [InlineData("\"use_cache\": true", "\"attention_bias\": true", "attention_bias is true")]
    [InlineData("\"use_cache\": true", "\"head_dim\": 256", "head_dim 256")]
    [InlineData("\"use_cache\": true", "\"sliding_window\": 1024", "sliding_window 1024")]
    [InlineData("\"vocab_size\": 32000\n}", "\"vocab_size\": 32000", "not valid JSON")]
    public void Invalid_configs_are_named(string find, string replace, string fragment)
    {
        string json = Llama2.Replace(find, replace);
        Assert.NotEqual(Llama2, json);
        AssertFormatError(() => HfConfig.Parse(json, "some/config.json"), "some/config.json", fragment);
    }

    [Fact]
    public void ToJson_round_trips_and_declares_a_llama()
    {
        var config = new LlamaConfig
        {
            Dim = 64, HiddenDim = 172, Layers = 5, Heads = 8, KvHeads = 4, VocabSize = 512, MaxSeqLen = 512, NormEps = 1e-5f,
            RopeTheta = 10000f, TiedEmbeddings = true, BosId = 1, EosId = 2,
            RopeScaling = new RopeScaling(RopeScalingKind.Yarn, 4, 512, 16, 2),
        };
        string json = HfConfig.ToJson(config, SafetensorsDType.BF16);
        Assert.Contains("\"architectures\": [\n    \"LlamaForCausalLM\"\n  ]", json.Replace("\r", ""));
        Assert.Contains("\"torch_dtype\": \"bfloat16\"", json);
        Assert.Contains("\"rms_norm_eps\": 1E-05", json, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(config, HfConfig.Parse(json));
        Assert.Equal(config with { RopeScaling = null }, HfConfig.Parse(HfConfig.ToJson(config with { RopeScaling = null })));
        Assert.Throws<ArgumentException>(() => HfConfig.ToJson(config with { RopeScaling = new RopeScaling(RopeScalingKind.NtkAware, 2) }));
    }
}
