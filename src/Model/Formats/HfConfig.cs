using System.Globalization;
using System.Text;
using System.Text.Json;
using UioLlm.Kernels;

namespace UioLlm.Model.Formats;

/// <summary>
/// Hugging Face config.json to and from <see cref="LlamaConfig"/>: the Llama family as transformers defines it for
/// model_type llama (Llama 1-3.x, with rope_scaling linear, dynamic, yarn or llama3), mistral (sliding_window: every
/// layer local) and qwen2 (q/k/v biases, often tied embeddings).
/// </summary>
public static class HfConfig
{
    private static readonly string[] SupportedModelTypes = ["llama", "mistral", "qwen2"];

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
            string modelType = CheckArchitecture(root, source);
            int maxPositions = root.Int("max_position_embeddings", 2048);
            int heads = root.Int("num_attention_heads");
            int layers = root.Int("num_hidden_layers");
            int window = SlidingWindow(root, modelType, maxPositions, source);
            var config = new LlamaConfig
            {
                Dim = root.Int("hidden_size"),
                HiddenDim = root.Int("intermediate_size"),
                Layers = layers,
                Heads = heads,
                KvHeads = root.Int("num_key_value_heads", heads),
                VocabSize = root.Int("vocab_size"),
                MaxSeqLen = maxPositions,
                NormEps = (float)root.Double("rms_norm_eps", 1e-6),
                RopeTheta = (float)root.Double("rope_theta", 10000),
                RopeScaling = ReadRopeScaling(root, maxPositions, source),
                TiedEmbeddings = root.Bool("tie_word_embeddings", false),
                AttentionBias = modelType == "qwen2",
                LocalLayers = window > 0 ? layers : 0,
                LocalWindow = window,
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

    /// <summary>Rejects model types and options whose computation differs from the Llama decoder; returns model_type.</summary>
    private static string CheckArchitecture(JsonFields root, string source)
    {
        string modelType = root.String("model_type");
        if (!SupportedModelTypes.Contains(modelType))
            throw new ModelFormatException(source, $"model_type '{modelType}' is not supported (expected {string.Join(", ", SupportedModelTypes)})");
        string act = root.String("hidden_act", "silu");
        if (act != "silu") throw new ModelFormatException(source, $"hidden_act '{act}' is not supported (expected silu)");
        if (root.Bool("attention_bias", false))
            throw new ModelFormatException(source, $"attention_bias is true (model_type {modelType}: biases on q, k, v and o_proj), but only Qwen2's q/k/v biases (model_type qwen2) are supported");
        if (root.Bool("mlp_bias", false)) throw new ModelFormatException(source, "mlp_bias is true, but MLP biases are not supported");
        if (root.Has("pretraining_tp") && root.Int("pretraining_tp") > 1)
            throw new ModelFormatException(source, $"pretraining_tp {root.Int("pretraining_tp")} is not supported (expected 1)");
        return modelType;
    }

    /// <summary>
    /// The attention window of every layer (0: global). Mistral: sliding_window when shorter than the context.
    /// Qwen2: ignored unless use_sliding_window, which (local upper layers from max_window_layers) is refused.
    /// </summary>
    private static int SlidingWindow(JsonFields root, string modelType, int maxPositions, string source)
    {
        if (modelType == "qwen2")
        {
            if (root.Bool("use_sliding_window", false))
                throw new ModelFormatException(source, "use_sliding_window is true (Qwen2's local upper layers from max_window_layers), which is not supported; set it to false");
            return 0;
        }
        if (!root.Has("sliding_window")) return 0;
        int window = root.Int("sliding_window");
        if (window <= 0) throw new ModelFormatException(source, $"field 'sliding_window' is {window}, expected a positive integer or null");
        if (window >= maxPositions) return 0;
        if (modelType != "mistral")
            throw new ModelFormatException(source, $"sliding_window {window} is shorter than max_position_embeddings {maxPositions}, but model_type {modelType} has no sliding window (expected mistral)");
        return window;
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
            "llama3" => RopeScalingKind.Llama3,
            _ => throw new ModelFormatException(source, $"rope_scaling type '{type}' is not supported (expected default, linear, dynamic, yarn or llama3)"),
        };
        if (kind == RopeScalingKind.None) return null;
        double factor = scaling.Double("factor");
        if (!(factor >= 1) || !double.IsFinite(factor))
            throw new ModelFormatException(source, $"rope_scaling factor {factor} must be a finite number >= 1");
        if (kind == RopeScalingKind.Llama3)
        {
            int l = scaling.Int("original_max_position_embeddings");
            double low = scaling.Double("low_freq_factor"), high = scaling.Double("high_freq_factor");
            if (!(low > 0) || !(high > low) || !double.IsFinite(high))
                throw new ModelFormatException(source, $"rope_scaling low_freq_factor {low} and high_freq_factor {high} must satisfy 0 < low < high");
            if (l <= 0) throw new ModelFormatException(source, $"rope_scaling original_max_position_embeddings {l} must be positive");
            return new RopeScaling(kind, factor, l, LowFreqFactor: low, HighFreqFactor: high);
        }
        int original = scaling.Int("original_max_position_embeddings", maxPositions);
        return new RopeScaling(kind, factor, original, scaling.Double("beta_fast", 32), scaling.Double("beta_slow", 1));
    }

    /// <summary>
    /// The transformers family that expresses <paramref name="config"/>: qwen2 (q/k/v biases), mistral (every layer
    /// local with one window), else llama.
    /// </summary>
    /// <exception cref="NotSupportedException">No family expresses it (local layers below the top, or biases with local layers).</exception>
    public static (string ModelType, string Architecture) Family(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        bool allLocal = config.LocalLayers > 0 && config.LocalLayers == config.Layers;
        if (config.AttentionBias)
        {
            if (config.LocalLayers > 0)
                throw new NotSupportedException($"Hugging Face config.json (Qwen2ForCausalLM) cannot express local attention together with q/k/v biases (LocalLayers = {config.LocalLayers})");
            return ("qwen2", "Qwen2ForCausalLM");
        }
        if (allLocal) return ("mistral", "MistralForCausalLM");
        config.RequireGlobalAttention("Hugging Face config.json (LlamaForCausalLM; MistralForCausalLM needs every layer local)");
        return ("llama", "LlamaForCausalLM");
    }

    /// <summary>config.json text for <paramref name="config"/> in its family's form (<see cref="Family"/>), with the given torch_dtype.</summary>
    /// <exception cref="ArgumentException">The RoPE scaling has no Hugging Face equivalent.</exception>
    /// <exception cref="NotSupportedException">The config has local layers that no family expresses (see <see cref="Family"/>).</exception>
    public static string ToJson(LlamaConfig config, SafetensorsDType dtype = SafetensorsDType.F32)
    {
        var (modelType, architecture) = Family(config);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            json.WriteStringValue(architecture);
            json.WriteEndArray();
            json.WriteString("model_type", modelType);
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
            if (modelType == "mistral") json.WriteNumber("sliding_window", config.LocalWindow);
            if (modelType == "qwen2") json.WriteBoolean("use_sliding_window", false);
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
            RopeScalingKind.Llama3 => "llama3",
            _ => throw new ArgumentException($"RoPE scaling {scaling.Kind} has no Hugging Face config equivalent", nameof(scaling)),
        };
        json.WriteStartObject("rope_scaling");
        json.WriteString("rope_type", type);
        json.WriteNumber("factor", scaling.Factor);
        json.WriteNumber("original_max_position_embeddings", scaling.OriginalContext);
        if (scaling.Kind == RopeScalingKind.Llama3)
        {
            json.WriteNumber("low_freq_factor", scaling.LowFreqFactor);
            json.WriteNumber("high_freq_factor", scaling.HighFreqFactor);
        }
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
