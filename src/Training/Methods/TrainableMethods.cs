using System.Text.Json;
using System.Text.Json.Nodes;
using UioLlm.Model;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

namespace UioLlm.Training.Methods;

/// <summary>
/// A trainable method as <c>uio train --method</c> and <c>uio eval</c> see it: its name, a one-line summary, its
/// options (read from "name:key=value:..." through <see cref="MethodOptions"/>), and a factory over a frozen base
/// (<paramref name="Create"/>(base, options, seed): fresh parameters drawn from the seed).
/// </summary>
public sealed record TrainableMethodDescriptor(string Name, string Summary, IReadOnlyList<MethodOptionInfo> Options,
    Func<LlamaModel, MethodOptions, int, ITrainableMethod> Create);

/// <summary>
/// The registry of trainable methods. Every method writes its adapter with <see cref="SaveAdapter"/>, whose
/// adapter_config.json records the method's name and resolved options, so <see cref="Load"/> can rebuild any of
/// them from a folder alone (UIO keeps its own PEFT-style config). <see cref="RegisterForEvaluation"/> makes every
/// method readable by <c>uio eval --methods NAME --adapter DIR</c>.
/// </summary>
public static class TrainableMethods
{
    private static readonly List<TrainableMethodDescriptor> methods = [];
    private static readonly Lock gate = new();
    private static bool registeredForEvaluation;

    static TrainableMethods()
    {
        foreach (var m in BuiltIn()) methods.Add(m);
    }

    /// <summary>The methods shipped with the engine (UIO trains through its own flags and <see cref="Uio.UioTrainable"/>).</summary>
    private static IEnumerable<TrainableMethodDescriptor> BuiltIn()
    {
        yield return RmtMethod.Descriptor;
        yield return TransformerXlMethod.Descriptor;
        yield return AutoCompressor.AutoCompressorMethod.Descriptor;
        yield return Icae.IcaeMethod.Descriptor;
        yield return ActivationBeacon.ActivationBeaconMethod.Descriptor;
        yield return LongLoraMethod.Descriptor;
        yield return MemorizingMethod.Descriptor;
        yield return MemorizingMethod.FocusedDescriptor;
        foreach (var d in RopeFinetuneMethod.Descriptors) yield return d;
        yield return LongNetMethod.Descriptor;
        yield return PerformerMethod.Descriptor;
    }

    public static IReadOnlyList<TrainableMethodDescriptor> All
    {
        get { lock (gate) return [.. methods]; }
    }

    /// <summary>Adds a method (a name already taken is refused).</summary>
    public static void Register(TrainableMethodDescriptor method)
    {
        ArgumentNullException.ThrowIfNull(method);
        lock (gate)
        {
            if (methods.Any(m => m.Name == method.Name)) throw new ArgumentException($"TrainableMethods: a method named '{method.Name}' is already registered", nameof(method));
            methods.Add(method);
        }
    }

    public static TrainableMethodDescriptor Find(string name) =>
        All.FirstOrDefault(m => m.Name == name)
        ?? throw new MethodOptionException($"unknown trainable method '{name}'; known: {string.Join(", ", All.Select(m => m.Name))}");

    /// <summary>A method from a spec "name:key=value:..." with fresh parameters drawn from <paramref name="seed"/>; unknown options are refused.</summary>
    public static ITrainableMethod Create(string spec, LlamaModel baseModel, int seed)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        var (name, given) = MethodRegistry.ParseSpec(spec);
        return Create(Find(name), given, baseModel, seed);
    }

    /// <summary>A method by name with the given options (as an adapter records them); unknown options are refused.</summary>
    public static ITrainableMethod Create(string name, IReadOnlyDictionary<string, string> given, LlamaModel baseModel, int seed)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        return Create(Find(name), given, baseModel, seed);
    }

    private static ITrainableMethod Create(TrainableMethodDescriptor descriptor, IReadOnlyDictionary<string, string> given, LlamaModel baseModel, int seed)
    {
        var options = new MethodOptions(descriptor.Name, given);
        var method = descriptor.Create(baseModel, options, seed);
        try
        {
            options.RejectUnknown(descriptor.Options.Select(o => o.Name));
            return method;
        }
        catch
        {
            method.Dispose();
            throw;
        }
    }

    // ------------------------------------------------------------------ adapters

    /// <summary>The config field naming the method, and the one holding its resolved options.</summary>
    public const string MethodField = "uiollm_method", OptionsField = "uiollm_method_options", BaseField = "base_model_name_or_path";

    /// <summary>
    /// Writes a method's adapter: its tensors and an adapter_config.json naming the method, its resolved options
    /// (everything needed to rebuild it) and the base model, plus <paramref name="extra"/> fields.
    /// </summary>
    public static void SaveAdapter(string folder, string method, IReadOnlyDictionary<string, string> options, IEnumerable<(string Name, Kernels.Tensor Value)> tensors,
        string? baseModelNameOrPath, LlamaConfig baseConfig, IReadOnlyDictionary<string, JsonNode?>? extra = null)
    {
        var json = new JsonObject
        {
            [MethodField] = method,
            [OptionsField] = new JsonObject(options.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
            [BaseField] = baseModelNameOrPath,
            ["base_dim"] = baseConfig.Dim, ["base_layers"] = baseConfig.Layers, ["base_vocab_size"] = baseConfig.VocabSize,
        };
        if (extra is not null) foreach (var (k, v) in extra) json[k] = v?.DeepClone();
        AdapterFolder.Save(folder, tensors, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>The method name and resolved options an adapter_config.json records; null when it is not a trainable method's adapter (UIO's own config).</summary>
    /// <exception cref="ModelFormatException">The config is missing or not JSON, or its method fields are mistyped.</exception>
    public static (string Method, Dictionary<string, string> Options)? ReadAdapterMethod(string folder)
    {
        string text = AdapterFolder.ReadConfig(folder);
        string path = Path.Combine(folder, AdapterFolder.ConfigFileName);
        try
        {
            var root = JsonNode.Parse(text) as JsonObject ?? throw new ModelFormatException(path, "adapter config is not a JSON object");
            if (root[MethodField] is not JsonValue name) return null;
            var options = new Dictionary<string, string>(StringComparer.Ordinal);
            if (root[OptionsField] is JsonObject o)
                foreach (var (k, v) in o) options[k] = v?.GetValue<string>() ?? throw new ModelFormatException(path, $"{OptionsField}.{k} is null");
            return (name.GetValue<string>(), options);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new ModelFormatException(path, $"adapter config cannot be read: {e.Message}");
        }
    }

    /// <summary>
    /// Checks that <paramref name="folder"/> holds an adapter of <paramref name="method"/> with exactly these
    /// resolved options and loads its tensors into <paramref name="parameters"/>.
    /// </summary>
    /// <exception cref="ModelFormatException">Another method, other options, a missing or misshapen tensor.</exception>
    public static void LoadAdapter(string folder, string method, IReadOnlyDictionary<string, string> options, IEnumerable<(string Name, Kernels.Tensor Target)> parameters)
    {
        string path = Path.Combine(folder, AdapterFolder.ConfigFileName);
        var saved = ReadAdapterMethod(folder) ?? throw new ModelFormatException(path, $"this is not a '{method}' adapter (no {MethodField} field: a UIO adapter?)");
        if (saved.Method != method) throw new ModelFormatException(path, $"this is a '{saved.Method}' adapter, not a '{method}' one");
        string Describe(IReadOnlyDictionary<string, string> o) => string.Join(", ", o.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"));
        if (Describe(saved.Options) != Describe(options))
            throw new ModelFormatException(path, $"the adapter was saved with {method} options {Describe(saved.Options)}, but this method has {Describe(options)}");
        AdapterFolder.LoadTensors(folder, parameters, $"{method}: {Describe(options)}");
    }

    /// <summary>Rebuilds the method an adapter folder was saved from (its recorded options) over <paramref name="baseModel"/> and loads its parameters.</summary>
    /// <exception cref="ModelFormatException">The folder holds no trainable method's adapter, or it does not load.</exception>
    public static ITrainableMethod Load(LlamaModel baseModel, string folder)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        string path = Path.Combine(folder, AdapterFolder.ConfigFileName);
        var saved = ReadAdapterMethod(folder) ?? throw new ModelFormatException(path, $"the adapter names no trainable method ({MethodField})");
        TrainableMethodDescriptor descriptor;
        try
        {
            descriptor = Find(saved.Method);
        }
        catch (MethodOptionException e)
        {
            throw new ModelFormatException(path, e.Message);
        }
        var method = Create(descriptor, saved.Options, baseModel, seed: 0);
        try
        {
            method.LoadAdapter(folder);
            return method;
        }
        catch
        {
            method.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Registers every trainable method (except those the inference registry already has, such as UIO) with
    /// <see cref="MethodRegistry"/> as a method that needs <c>--adapter</c>: it is rebuilt from the adapter and read
    /// through <see cref="ITrainableMethod.OpenSession"/>. Idempotent.
    /// </summary>
    public static void RegisterForEvaluation()
    {
        lock (gate)
        {
            if (registeredForEvaluation) return;
            registeredForEvaluation = true;
        }
        foreach (var m in All)
        {
            if (MethodRegistry.All.Any(d => d.Name == m.Name)) continue;
            MethodRegistry.Register(new MethodDescriptor(m.Name, m.Summary + " (trained: needs --adapter)", [],
                (ctx, _) =>
                {
                    string folder = ctx.AdapterFolder ?? throw new MethodOptionException($"method '{m.Name}': needs a trained adapter folder (--adapter)");
                    var method = Load(ctx.Model, folder);
                    if (method.Name != m.Name)
                    {
                        method.Dispose();
                        throw new MethodOptionException($"method '{m.Name}': the adapter in '{folder}' is a '{method.Name}' adapter");
                    }
                    return new SessionMaker(method).Make;
                }, Requires: "adapter", AcceptsAdapter: folder => HoldsAdapterOf(folder, m.Name)));
        }
    }

    /// <summary>Whether <paramref name="folder"/> holds an adapter of the method <paramref name="name"/>.</summary>
    public static bool HoldsAdapterOf(string folder, string name)
    {
        try
        {
            return ReadAdapterMethod(folder)?.Method == name;
        }
        catch (ModelFormatException)
        {
            return false;
        }
    }

    /// <summary>Owns a loaded method for an evaluation factory's lifetime.</summary>
    private sealed class SessionMaker(ITrainableMethod method) : IDisposable
    {
        public ILongContextSession Make() => method.OpenSession();
        public void Dispose() => method.Dispose();
    }
}
