using System.Globalization;
using System.Text;
using System.Text.Json;
using UioLlm.Kernels;

namespace UioLlm.Model.Formats;

/// <summary>Hugging Face config.json to and from <see cref="LlamaConfig"/> (model_type llama, or mistral with the same shape).</summary>
public static class HfConfig
{
    private static readonly string[] SupportedModelTypes = ["llama", "mistral"];

    /// <summary>Reads and converts the config.json at <paramref name="path"/>.</summary>
    /// <exception cref="ModelFormatException">Invalid JSON, an unsupported model_type, or a missing or mistyped field.</exception>
    public static LlamaConfig Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"config file '{path}' does not exist", path);
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>Converts config.json text; <paramref name="source"/> names it in errors.</summary>
    public static LlamaConfig Parse(string json, string source = "config.json")
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(source, $"config is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = new JsonFields(doc.RootElement, source);
            CheckArchitecture(root, source);
            int maxPositions = root.Int("max_position_embeddings", 2048);
            int heads = root.Int("num_attention_heads");
            var config = new LlamaConfig
            {
                Dim = root.Int("hidden_size"),
                HiddenDim = root.Int("intermediate_size"),
                Layers = root.Int("num_hidden_layers"),
                Heads = heads,
                KvHeads = root.Int("num_key_value_heads", heads),
                VocabSize = root.Int("vocab_size"),
                MaxSeqLen = maxPositions,
                NormEps = (float)root.Double("rms_norm_eps", 1e-6),
                RopeTheta = (float)root.Double("rope_theta", 10000),
                RopeScaling = ReadRopeScaling(root, maxPositions, source),
                TiedEmbeddings = root.Bool("tie_word_embeddings", false),
                BosId = root.FirstInt("bos_token_id", 1),
                EosId = root.FirstInt("eos_token_id", 2),
            };
            try
            {
                config.Validate(source);
            }
            catch (ArgumentException e)
            {
                throw new ModelFormatException(source, $"config does not describe a valid model: {e.Message}", e);
            }
            if (root.Has("head_dim") && root.Int("head_dim") != config.HeadDim)
                throw new ModelFormatException(source, $"head_dim {root.Int("head_dim")} differs from hidden_size / num_attention_heads = {config.HeadDim}; such models are not supported");
            return config;
        }
    }

    /// <summary>Rejects model types and options whose computation differs from the Llama decoder.</summary>
    private static void CheckArchitecture(JsonFields root, string source)
    {
        string modelType = root.String("model_type");
        if (!SupportedModelTypes.Contains(modelType))
            throw new ModelFormatException(source, $"model_type '{modelType}' is not supported (expected {string.Join(" or ", SupportedModelTypes)})");
        string act = root.String("hidden_act", "silu");
        if (act != "silu") throw new ModelFormatException(source, $"hidden_act '{act}' is not supported (expected silu)");
        foreach (var bias in new[] { "attention_bias", "mlp_bias" })
            if (root.Bool(bias, false)) throw new ModelFormatException(source, $"{bias} is true, but biases are not supported");
        if (root.Has("sliding_window"))
        {
            int window = root.Int("sliding_window");
            int positions = root.Int("max_position_embeddings", 2048);
            if (window < positions)
                throw new ModelFormatException(source, $"sliding_window {window} is shorter than max_position_embeddings {positions}; sliding-window attention is not supported");
        }
    }

    /// <summary>rope_scaling {rope_type|type, factor, original_max_position_embeddings[, beta_fast, beta_slow]}.</summary>
    private static RopeScaling? ReadRopeScaling(JsonFields root, int maxPositions, string source)
    {
        var scaling = root.Object("rope_scaling");
        if (scaling is null) return null;
        string type = scaling.Has("rope_type") ? scaling.String("rope_type") : scaling.String("type");
        var kind = type switch
        {
            "default" => RopeScalingKind.None,
            "linear" => RopeScalingKind.Linear,
            "dynamic" => RopeScalingKind.DynamicNtk,
            "yarn" => RopeScalingKind.Yarn,
            _ => throw new ModelFormatException(source, $"rope_scaling type '{type}' is not supported (expected linear, dynamic or yarn)"),
        };
        if (kind == RopeScalingKind.None) return null;
        double factor = scaling.Double("factor");
        if (!(factor >= 1) || !double.IsFinite(factor))
            throw new ModelFormatException(source, $"rope_scaling factor {factor} must be a finite number >= 1");
        int original = scaling.Int("original_max_position_embeddings", maxPositions);
        return new RopeScaling(kind, factor, original, scaling.Double("beta_fast", 32), scaling.Double("beta_slow", 1));
    }

    /// <summary>config.json text for <paramref name="config"/>, as a LlamaForCausalLM with the given torch_dtype.</summary>
    /// <exception cref="ArgumentException">The RoPE scaling has no Hugging Face equivalent.</exception>
    /// <exception cref="NotSupportedException">The config has local layers (LlamaForCausalLM has no per-layer sliding window).</exception>
    public static string ToJson(LlamaConfig config, SafetensorsDType dtype = SafetensorsDType.F32)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.RequireGlobalAttention("Hugging Face config.json (LlamaForCausalLM)");
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            json.WriteStringValue("LlamaForCausalLM");
            json.WriteEndArray();
            json.WriteString("model_type", "llama");
            json.WriteNumber("hidden_size", config.Dim);
            json.WriteNumber("intermediate_size", config.HiddenDim);
            json.WriteNumber("num_hidden_layers", config.Layers);
            json.WriteNumber("num_attention_heads", config.Heads);
            json.WriteNumber("num_key_value_heads", config.KvHeads);
            json.WriteNumber("vocab_size", config.VocabSize);
            json.WriteNumber("max_position_embeddings", config.MaxSeqLen);
            json.WriteNumber("rms_norm_eps", Shortest(config.NormEps));
            json.WriteNumber("rope_theta", Shortest(config.RopeTheta));
            WriteRopeScaling(json, config.RopeScaling);
            json.WriteBoolean("tie_word_embeddings", config.TiedEmbeddings);
            json.WriteNumber("bos_token_id", config.BosId);
            json.WriteNumber("eos_token_id", config.EosId);
            json.WriteString("hidden_act", "silu");
            json.WriteString("torch_dtype", TorchDType(dtype));
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Writes config.json for <paramref name="config"/> atomically.</summary>
    public static void Write(LlamaConfig config, string path, SafetensorsDType dtype = SafetensorsDType.F32)
    {
        string text = ToJson(config, dtype);
        AtomicFile.Write(path, stream => stream.Write(Encoding.UTF8.GetBytes(text)));
    }

    /// <summary>The torch_dtype string of a safetensors dtype.</summary>
    public static string TorchDType(SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F32 => "float32",
        SafetensorsDType.F16 => "float16",
        SafetensorsDType.BF16 => "bfloat16",
        _ => throw new ArgumentException($"no torch_dtype for {dtype}", nameof(dtype)),
    };

    private static void WriteRopeScaling(Utf8JsonWriter json, RopeScaling? scaling)
    {
        if (scaling is null || scaling.Kind == RopeScalingKind.None)
        {
            json.WriteNull("rope_scaling");
            return;
        }
        string type = scaling.Kind switch
        {
            RopeScalingKind.Linear => "linear",
            RopeScalingKind.DynamicNtk => "dynamic",
            RopeScalingKind.Yarn => "yarn",
            _ => throw new ArgumentException($"RoPE scaling {scaling.Kind} has no Hugging Face config equivalent", nameof(scaling)),
        };
        json.WriteStartObject("rope_scaling");
        json.WriteString("rope_type", type);
        json.WriteNumber("factor", scaling.Factor);
        json.WriteNumber("original_max_position_embeddings", scaling.OriginalContext);
        if (scaling.Kind == RopeScalingKind.Yarn)
        {
            json.WriteNumber("beta_fast", scaling.BetaFast);
            json.WriteNumber("beta_slow", scaling.BetaSlow);
        }
        json.WriteEndObject();
    }

    /// <summary>The shortest decimal that reads back as the same float (1e-5, not 9.99999974737875E-06).</summary>
    private static double Shortest(float value) => double.Parse(value.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
}

/// <summary>Typed access to the fields of one JSON object, with errors that name the source and the field.</summary>
internal sealed class JsonFields
{
    private readonly JsonElement element;
    private readonly string source;
    private readonly string prefix;

    public JsonFields(JsonElement element, string source, string prefix = "")
    {
        this.source = source;
        this.prefix = prefix;
        if (element.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(source, $"{(prefix.Length == 0 ? "the top level" : $"'{prefix.TrimEnd('.')}'")} is a JSON {element.ValueKind}, expected an object");
        this.element = element;
    }

    /// <summary>True when the field is present and not null.</summary>
    public bool Has(string name) => element.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;

    private JsonElement Required(string name) =>
        Has(name) ? element.GetProperty(name) : throw new ModelFormatException(source, $"field '{prefix}{name}' is missing");

    private ModelFormatException Wrong(string name, JsonElement value, string expected) =>
        new(source, $"field '{prefix}{name}' is {value.GetRawText()}, expected {expected}");

    public int Int(string name, int? fallback = null)
    {
        if (fallback is { } f && !Has(name)) return f;
        var v = Required(name);
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw Wrong(name, v, "an integer");
    }

    /// <summary>An integer, or the first element of an integer list (eos_token_id may be a list).</summary>
    public int FirstInt(string name, int fallback)
    {
        if (!Has(name)) return fallback;
        var v = element.GetProperty(name);
        if (v.ValueKind == JsonValueKind.Array)
        {
            if (v.GetArrayLength() == 0) return fallback;
            v = v[0];
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw Wrong(name, v, "an integer or a list of integers");
    }

    public double Double(string name, double? fallback = null)
    {
        if (fallback is { } f && !Has(name)) return f;
        var v = Required(name);
        return v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw Wrong(name, v, "a number");
    }

    public bool Bool(string name, bool fallback)
    {
        if (!Has(name)) return fallback;
        var v = element.GetProperty(name);
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Wrong(name, v, "true or false"),
        };
    }

    public string String(string name, string? fallback = null)
    {
        if (fallback is not null && !Has(name)) return fallback;
        var v = Required(name);
        return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Wrong(name, v, "a string");
    }

    /// <summary>A nested object, or null when the field is absent or null.</summary>
    public JsonFields? Object(string name) =>
        Has(name) ? new JsonFields(element.GetProperty(name), source, $"{prefix}{name}.") : null;
}
