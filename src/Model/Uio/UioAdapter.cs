using System.Globalization;
using System.Text;
using System.Text.Json;
using UioLlm.Model.Autograd;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Uio;

/// <summary>
/// What adapter_config.json records: the UIO settings, the shape of the base model the adapter was
/// trained on, and the base model's name or path when it was given at save time.
/// </summary>
public sealed record UioAdapterManifest(UioConfig Config, UioAdapterBaseShape BaseShape, string? BaseModelNameOrPath);

/// <summary>The base-model fields an adapter depends on, named as in Hugging Face's config.json.</summary>
public sealed record UioAdapterBaseShape(int HiddenSize, int NumHiddenLayers, int NumAttentionHeads, int NumKeyValueHeads, int VocabSize)
{
    /// <summary>The shape of <paramref name="config"/>.</summary>
    public static UioAdapterBaseShape Of(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new(config.Dim, config.Layers, config.Heads, config.KvHeads, config.VocabSize);
    }

    /// <summary>(json field, value) pairs in the order they are written.</summary>
    public IEnumerable<(string Field, int Value)> Fields()
    {
        yield return ("hidden_size", HiddenSize);
        yield return ("num_hidden_layers", NumHiddenLayers);
        yield return ("num_attention_heads", NumAttentionHeads);
        yield return ("num_key_value_heads", NumKeyValueHeads);
        yield return ("vocab_size", VocabSize);
    }
}

/// <summary>
/// Saves and loads the trained part of a <see cref="UioModel"/> (its LoRA adapters and the memory
/// embedding) as a PEFT-style adapter folder:
/// <list type="bullet">
/// <item><c>adapter_model.safetensors</c> (F32): for every layer L, role R (encoder, transfer) and the
/// projections that role adapts (encoder: q_proj, v_proj; transfer: k_proj, v_proj),
/// <c>base_model.model.model.layers.{L}.self_attn.{proj}.{R}.lora_A.weight</c> [r_R, hidden_size] and
/// <c>...lora_B.weight</c> [out, r_R] (out = hidden_size for q_proj, num_key_value_heads * head_dim for
/// k_proj and v_proj); plus <c>uio.memory_embedding</c> [1, hidden_size].</item>
/// <item><c>adapter_config.json</c>: <c>"peft_type": "UIO"</c>, <c>"task_type": "CAUSAL_LM"</c>,
/// <c>"base_model_name_or_path"</c> (string or null), <c>"r"</c> and <c>"lora_alpha"</c> as objects
/// {"encoder": .., "transfer": ..}, <c>"target_modules"</c> as {"encoder": ["q_proj", "v_proj"],
/// "transfer": ["k_proj", "v_proj"]}, <c>"bias": "none"</c>, a <c>"uio"</c> object with the
/// <see cref="UioConfig"/> fields (segment_length, memory_tokens, encoder_rank, encoder_alpha,
/// transfer_rank, transfer_alpha, memory_cap_segments) and a <c>"base_model_shape"</c> object
/// (hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size).</item>
/// </list>
/// The "uio" object is authoritative; the PEFT-style r, lora_alpha and target_modules must agree with it.
/// </summary>
public static class UioAdapter
{
    public const string WeightsFileName = "adapter_model.safetensors";
    public const string ConfigFileName = "adapter_config.json";
    public const string PeftType = "UIO";
    public const string MemoryEmbeddingName = "uio.memory_embedding";

    private const string EncoderRole = "encoder";
    private const string TransferRole = "transfer";
    private static readonly string[] EncoderTargets = ["q_proj", "v_proj"];
    private static readonly string[] TransferTargets = ["k_proj", "v_proj"];

    /// <summary>The tensor name of one LoRA factor (<paramref name="factor"/> is "A" or "B").</summary>
    public static string LoraTensorName(int layer, string role, string projection, string factor) =>
        $"base_model.model.model.layers.{layer}.self_attn.{projection}.{role}.lora_{factor}.weight";

    /// <summary>
    /// Writes the adapter of <paramref name="model"/> into <paramref name="folder"/> (created if missing):
    /// first the tensors, then the config, each atomically (temporary file renamed over the old one).
    /// </summary>
    public static void Save(UioModel model, string folder, string? baseModelNameOrPath = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(folder);
        Directory.CreateDirectory(folder);
        var entries = NamedParameters(model).Select(p => SafetensorsEntry.FromTensor(p.Name, p.Parameter.Value)).ToList();
        SafetensorsWriter.Write(Path.Combine(folder, WeightsFileName), entries, SafetensorsDType.F32,
            new Dictionary<string, string> { ["format"] = "pt" });
        var manifest = new UioAdapterManifest(model.Config, UioAdapterBaseShape.Of(model.Base.Config), baseModelNameOrPath);
        byte[] json = Encoding.UTF8.GetBytes(ToJson(manifest));
        AtomicFile.Write(Path.Combine(folder, ConfigFileName), stream => stream.Write(json));
    }

    /// <summary>The UIO settings recorded in <paramref name="folder"/>'s adapter_config.json, validated.</summary>
    /// <exception cref="ModelFormatException">The file is missing, not JSON, or a field is missing, mistyped or invalid.</exception>
    public static UioConfig ReadConfig(string folder) => ReadManifest(folder).Config;

    /// <summary>Everything <paramref name="folder"/>'s adapter_config.json records, validated.</summary>
    /// <exception cref="ModelFormatException">The file is missing, not JSON, or a field is missing, mistyped or invalid.</exception>
    public static UioAdapterManifest ReadManifest(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string path = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(path)) throw new ModelFormatException(path, $"adapter config is missing: expected {ConfigFileName} in '{folder}'");
        return ParseManifest(File.ReadAllText(path), path);
    }

    /// <summary>
    /// Builds a <see cref="UioModel"/> over <paramref name="baseModel"/> with the adapter saved in
    /// <paramref name="folder"/>. The recorded base shape and every tensor's shape must match the base model.
    /// </summary>
    /// <exception cref="ModelFormatException">A file, field or tensor is missing, invalid, or does not fit the base model.</exception>
    public static UioModel Load(LlamaModel baseModel, string folder)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        var manifest = ReadManifest(folder);
        string configPath = Path.Combine(folder, ConfigFileName);
        CheckBaseShape(manifest, baseModel.Config, configPath);

        string weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(weightsPath)) throw new ModelFormatException(weightsPath, $"adapter weights are missing: expected {WeightsFileName} in '{folder}'");
        var file = SafetensorsFile.Read(weightsPath);

        var model = new UioModel(baseModel, manifest.Config);
        try
        {
            CopyTensors(file, model);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Every saved parameter with its tensor name, in file order.</summary>
    private static IEnumerable<(string Name, Var Parameter)> NamedParameters(UioModel model)
    {
        for (int layer = 0; layer < model.Layers.Count; layer++)
        {
            var adapters = model.Layers[layer];
            IEnumerable<(string Role, string Projection, Lora Lora)> slots =
            [
                (EncoderRole, "q_proj", adapters.EncoderQ),
                (EncoderRole, "v_proj", adapters.EncoderV),
                (TransferRole, "k_proj", adapters.TransferK),
                (TransferRole, "v_proj", adapters.TransferV),
            ];
            foreach (var (role, projection, lora) in slots)
            {
                yield return (LoraTensorName(layer, role, projection, "A"), lora.A);
                yield return (LoraTensorName(layer, role, projection, "B"), lora.B);
            }
        }
        yield return (MemoryEmbeddingName, model.MemoryEmbedding);
    }

    /// <summary>Fills every parameter of <paramref name="model"/> from the file, checking names and shapes.</summary>
    private static void CopyTensors(SafetensorsFile file, UioModel model)
    {
        var expected = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, parameter) in NamedParameters(model))
        {
            expected.Add(name);
            var info = file.Find(name) ?? throw new ModelFormatException(file.Path, $"tensor '{name}' is missing");
            long[] want = parameter.Value.Shape.ToArray().Select(d => (long)d).ToArray();
            if (!info.Shape.SequenceEqual(want))
                throw new ModelFormatException(file.Path,
                    $"tensor '{name}' has shape {info.ShapeString}, expected [{string.Join(", ", want)}] (ranks: encoder {model.Config.EncoderRank}, transfer {model.Config.TransferRank}; base hidden_size {model.Base.Config.Dim})");
            float[] values = file.ReadTensor(info);
            int bad = NonFinite.FirstIndex(values);
            if (bad >= 0)
                throw new ModelFormatException(file.Path,
                    $"tensor '{name}' holds a non-finite weight: {NonFinite.Describe(values[bad])} at index {NonFinite.Coordinates(parameter.Value.Shape, bad)} (the adapter was saved from a diverged run, or the file is damaged)");
            parameter.Value.CopyFrom(values);
        }
        // A tensor the model has no place for means the file belongs to another layout (e.g. more layers).
        var extra = file.Tensors.FirstOrDefault(t => !expected.Contains(t.Name));
        if (extra is not null)
            throw new ModelFormatException(file.Path, $"unexpected tensor '{extra.Name}' {extra.ShapeString}: a UIO adapter for {model.Layers.Count} layers has only {expected.Count} tensors");
    }

    /// <summary>The recorded base shape must equal the base model's, field by field.</summary>
    private static void CheckBaseShape(UioAdapterManifest manifest, LlamaConfig baseConfig, string path)
    {
        var actual = UioAdapterBaseShape.Of(baseConfig).Fields().ToDictionary(f => f.Field, f => f.Value);
        foreach (var (field, recorded) in manifest.BaseShape.Fields())
            if (actual[field] != recorded)
                throw new ModelFormatException(path,
                    $"base_model_shape.{field} is {recorded} (the adapter's base), but the given base model has {field} {actual[field]}: the adapter was trained on another base model");
        try
        {
            manifest.Config.Validate(baseConfig);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(path, $"'uio' settings do not fit the base model: {e.Message}", e);
        }
    }

    // ------------------------------------------------------------------ adapter_config.json

    /// <summary>adapter_config.json text for <paramref name="manifest"/>.</summary>
    public static string ToJson(UioAdapterManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var c = manifest.Config;
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("peft_type", PeftType);
            json.WriteString("task_type", "CAUSAL_LM");
            if (manifest.BaseModelNameOrPath is null) json.WriteNull("base_model_name_or_path");
            else json.WriteString("base_model_name_or_path", manifest.BaseModelNameOrPath);

            json.WriteStartObject("r");
            json.WriteNumber(EncoderRole, c.EncoderRank);
            json.WriteNumber(TransferRole, c.TransferRank);
            json.WriteEndObject();
            json.WriteStartObject("lora_alpha");
            json.WriteNumber(EncoderRole, Shortest(c.EncoderAlpha));
            json.WriteNumber(TransferRole, Shortest(c.TransferAlpha));
            json.WriteEndObject();
            json.WriteStartObject("target_modules");
            WriteStrings(json, EncoderRole, EncoderTargets);
            WriteStrings(json, TransferRole, TransferTargets);
            json.WriteEndObject();
            json.WriteString("bias", "none");

            json.WriteStartObject("uio");
            json.WriteNumber("segment_length", c.SegmentLength);
            json.WriteNumber("memory_tokens", c.MemoryTokens);
            json.WriteNumber("encoder_rank", c.EncoderRank);
            json.WriteNumber("encoder_alpha", Shortest(c.EncoderAlpha));
            json.WriteNumber("transfer_rank", c.TransferRank);
            json.WriteNumber("transfer_alpha", Shortest(c.TransferAlpha));
            json.WriteNumber("memory_cap_segments", c.MemoryCapSegments);
            json.WriteEndObject();

            json.WriteStartObject("base_model_shape");
            foreach (var (field, value) in manifest.BaseShape.Fields()) json.WriteNumber(field, value);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Parses and validates adapter_config.json text; <paramref name="source"/> names it in errors.</summary>
    /// <exception cref="ModelFormatException">Not JSON, not a UIO adapter, or a field is missing, mistyped or invalid.</exception>
    public static UioAdapterManifest ParseManifest(string json, string source = ConfigFileName)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(source, $"adapter config is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = new JsonFields(doc.RootElement, source);
            string peftType = root.String("peft_type");
            if (peftType != PeftType)
                throw new ModelFormatException(source, $"field 'peft_type' is '{peftType}', expected '{PeftType}'");
            var config = ReadUioConfig(doc.RootElement, source);
            CheckPeftFields(doc.RootElement, config, source);
            var shape = ReadBaseShape(root, source);
            string? baseName = root.Has("base_model_name_or_path") ? root.String("base_model_name_or_path") : null;
            return new UioAdapterManifest(config, shape, baseName);
        }
    }

    private static UioConfig ReadUioConfig(JsonElement root, string source)
    {
        var uio = new JsonFields(root, source).Object("uio") ?? throw new ModelFormatException(source, "field 'uio' is missing");
        var element = root.GetProperty("uio");
        var config = new UioConfig
        {
            SegmentLength = uio.Int("segment_length"),
            MemoryTokens = uio.Int("memory_tokens"),
            EncoderRank = uio.Int("encoder_rank"),
            EncoderAlpha = Float(element, "encoder_alpha", "uio.", source),
            TransferRank = uio.Int("transfer_rank"),
            TransferAlpha = Float(element, "transfer_alpha", "uio.", source),
            MemoryCapSegments = uio.Int("memory_cap_segments"),
        };
        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(source, $"'uio' settings are invalid: {e.Message}", e);
        }
        return config;
    }

    /// <summary>The PEFT-style r, lora_alpha and target_modules must repeat what the "uio" object says.</summary>
    private static void CheckPeftFields(JsonElement root, UioConfig config, string source)
    {
        var fields = new JsonFields(root, source);
        var ranks = fields.Object("r") ?? throw new ModelFormatException(source, "field 'r' is missing");
        var alphas = root.TryGetProperty("lora_alpha", out var a) && a.ValueKind == JsonValueKind.Object
            ? a : throw new ModelFormatException(source, "field 'lora_alpha' is missing or not an object {\"encoder\": .., \"transfer\": ..}");
        foreach (var (role, rank, alpha, targets) in new[]
        {
            (EncoderRole, config.EncoderRank, config.EncoderAlpha, EncoderTargets),
            (TransferRole, config.TransferRank, config.TransferAlpha, TransferTargets),
        })
        {
            int foundRank = ranks.Int(role);
            if (foundRank != rank)
                throw new ModelFormatException(source, $"field 'r.{role}' is {foundRank}, but 'uio.{role}_rank' is {rank}");
            float foundAlpha = Float(alphas, role, "lora_alpha.", source);
            if (foundAlpha != alpha)
                throw new ModelFormatException(source, $"field 'lora_alpha.{role}' is {foundAlpha}, but 'uio.{role}_alpha' is {alpha}");
            string[] foundTargets = Strings(root, "target_modules", role, source);
            if (!foundTargets.SequenceEqual(targets))
                throw new ModelFormatException(source,
                    $"field 'target_modules.{role}' is [{string.Join(", ", foundTargets)}], expected [{string.Join(", ", targets)}]");
        }
    }

    private static UioAdapterBaseShape ReadBaseShape(JsonFields root, string source)
    {
        var shape = root.Object("base_model_shape") ?? throw new ModelFormatException(source, "field 'base_model_shape' is missing");
        int Positive(string field)
        {
            int value = shape.Int(field);
            return value > 0 ? value : throw new ModelFormatException(source, $"field 'base_model_shape.{field}' is {value}, expected a positive integer");
        }
        return new UioAdapterBaseShape(Positive("hidden_size"), Positive("num_hidden_layers"), Positive("num_attention_heads"),
            Positive("num_key_value_heads"), Positive("vocab_size"));
    }

    /// <summary>A float field read straight as float32, so the shortest decimal written reads back bit for bit.</summary>
    private static float Float(JsonElement obj, string name, string prefix, string source)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
            throw new ModelFormatException(source, $"field '{prefix}{name}' is missing");
        return v.ValueKind == JsonValueKind.Number && v.TryGetSingle(out float f) && float.IsFinite(f)
            ? f
            : throw new ModelFormatException(source, $"field '{prefix}{name}' is {v.GetRawText()}, expected a finite number");
    }

    /// <summary>obj[name][role] as a list of strings.</summary>
    private static string[] Strings(JsonElement root, string name, string role, string source)
    {
        string field = $"{name}.{role}";
        if (!root.TryGetProperty(name, out var obj) || obj.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(source, $"field '{name}' is missing or not an object {{\"encoder\": [..], \"transfer\": [..]}}");
        if (!obj.TryGetProperty(role, out var list) || list.ValueKind != JsonValueKind.Array)
            throw new ModelFormatException(source, $"field '{field}' is missing or not a list of module names");
        return list.EnumerateArray().Select(item => item.ValueKind == JsonValueKind.String
            ? item.GetString()!
            : throw new ModelFormatException(source, $"field '{field}' has {item.GetRawText()}, expected module names (strings)")).ToArray();
    }

    private static void WriteStrings(Utf8JsonWriter json, string name, IEnumerable<string> values)
    {
        json.WriteStartArray(name);
        foreach (var v in values) json.WriteStringValue(v);
        json.WriteEndArray();
    }

    /// <summary>The shortest decimal that reads back as the same float (0.1, not 0.10000000149011612).</summary>
    private static double Shortest(float value) => double.Parse(value.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
}
