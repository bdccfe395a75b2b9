using UioLlm.Model.Modules;
using System.Globalization;
using UioLlm.Kernels;
using UioLlm.Model.Baselines;
using UioLlm.Model.Uio;

namespace UioLlm.Model.Methods;

/// <summary>A method name or option value that is not acceptable: names the method, the option, what was expected and what was found.</summary>
public sealed class MethodOptionException(string message) : ArgumentException(message);

/// <summary>What a method may need besides its options: the frozen base model and, for trained methods, an adapter folder.</summary>
public sealed record MethodContext(LlamaModel Model, string? AdapterFolder = null);

/// <summary>One option of a method, as listed by <c>uio eval --list-methods</c>.</summary>
public sealed record MethodOptionInfo(string Name, string Default, string Meaning);

/// <summary>
/// A registered method: its name, a one-line summary, its options, and a factory. <see cref="Prepare"/> runs once
/// per evaluation (reads and checks the options, loads what the method needs) and returns the session maker.
/// </summary>
/// <param name="AcceptsAdapter">For a method that needs an adapter: whether a folder holds one of its adapters, so
/// "all" with an --adapter runs only the methods that adapter belongs to (null: every adapter is tried).</param>
public sealed record MethodDescriptor(string Name, string Summary, IReadOnlyList<MethodOptionInfo> Options,
    Func<MethodContext, MethodOptions, Func<ILongContextSession>> Prepare, string? Requires = null, Func<string, bool>? AcceptsAdapter = null);

/// <summary>
/// The options given to one method ("name:key=value:key=value"), read with typed getters that record the
/// resolved value (given or default), so a run can print and save exactly what it ran.
/// </summary>
public sealed class MethodOptions
{
    private readonly Dictionary<string, string> given;
    private readonly HashSet<string> read = [];
    private readonly SortedDictionary<string, string> resolved = new(StringComparer.Ordinal);

    public MethodOptions(string method, IReadOnlyDictionary<string, string>? given = null)
    {
        Method = method;
        this.given = new Dictionary<string, string>(given ?? new Dictionary<string, string>(), StringComparer.Ordinal);
    }

    public string Method { get; }

    /// <summary>Every option the method read, with the value it used.</summary>
    public IReadOnlyDictionary<string, string> Resolved => resolved;

    public int Int(string name, int fallback, int min = int.MinValue, int max = int.MaxValue)
    {
        string? text = Take(name);
        int value = fallback;
        if (text is not null && !int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value))
            throw new MethodOptionException($"method '{Method}': option {name} expects an integer, got '{text}'");
        if (value < min || value > max)
            throw new MethodOptionException($"method '{Method}': option {name} must lie in [{min}, {(max == int.MaxValue ? "inf" : max.ToString(CultureInfo.InvariantCulture))}], got {value}");
        resolved[name] = value.ToString(CultureInfo.InvariantCulture);
        return value;
    }

    public double Double(string name, double fallback, double min = double.NegativeInfinity, double max = double.PositiveInfinity)
    {
        string? text = Take(name);
        double value = fallback;
        if (text is not null && !double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value))
            throw new MethodOptionException($"method '{Method}': option {name} expects a number, got '{text}'");
        if (!(value >= min && value <= max) || double.IsNaN(value))
            throw new MethodOptionException($"method '{Method}': option {name} must lie in [{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}], got {value.ToString(CultureInfo.InvariantCulture)}");
        resolved[name] = value.ToString("R", CultureInfo.InvariantCulture);
        return value;
    }

    public string Choice(string name, string fallback, params string[] allowed)
    {
        string value = Take(name) ?? fallback;
        if (!allowed.Contains(value, StringComparer.Ordinal))
            throw new MethodOptionException($"method '{Method}': option {name} must be one of {string.Join(", ", allowed)}, got '{value}'");
        resolved[name] = value;
        return value;
    }

    /// <summary>Throws when an option was given that the method never read (a typo or an option of another method).</summary>
    public void RejectUnknown(IEnumerable<string> known)
    {
        foreach (var name in given.Keys)
            if (!read.Contains(name))
                throw new MethodOptionException($"method '{Method}': unknown option '{name}'; its options are {string.Join(", ", known)}");
    }

    private string? Take(string name)
    {
        read.Add(name);
        return given.TryGetValue(name, out var v) ? v : null;
    }
}

/// <summary>A method ready to run: its label, name, resolved options, and a maker of fresh sessions (one per document).</summary>
public sealed class SessionFactory(string label, string method, IReadOnlyDictionary<string, string> options, Func<ILongContextSession> create,
    IDisposable? owned = null) : IDisposable
{
    public string Label { get; } = label;
    public string Method { get; } = method;
    public IReadOnlyDictionary<string, string> Options { get; } = options;

    /// <summary>A fresh session (dispose it when the document is done).</summary>
    public ILongContextSession Create() => create();

    /// <summary>Resources shared by the sessions (e.g. a loaded adapter), released with the factory.</summary>
    public void Dispose() => owned?.Dispose();

    public override string ToString() => Label;
}

/// <summary>
/// The named long-context methods at inference. The command line and the evaluation harness only read this
/// registry, so a new method is one <see cref="Register"/> call (see docs/ARCHITECTURE.md, "How to add a method").
/// Specs: "name" or "name:key=value:key=value"; a list is comma-separated; "all" is every method whose
/// requirements are met (UIO needs an adapter).
/// </summary>
public static class MethodRegistry
{
    private static readonly List<MethodDescriptor> methods = [];
    private static readonly Lock gate = new();

    static MethodRegistry()
    {
        foreach (var m in BuiltIn()) methods.Add(m);
    }

    public static IReadOnlyList<MethodDescriptor> All
    {
        get { lock (gate) return [.. methods]; }
    }

    /// <summary>Adds a method (a name already taken is refused).</summary>
    public static void Register(MethodDescriptor method)
    {
        ArgumentNullException.ThrowIfNull(method);
        lock (gate)
        {
            if (methods.Any(m => m.Name == method.Name)) throw new ArgumentException($"MethodRegistry: a method named '{method.Name}' is already registered", nameof(method));
            methods.Add(method);
        }
    }

    public static MethodDescriptor Find(string name) =>
        All.FirstOrDefault(m => m.Name == name)
        ?? throw new MethodOptionException($"unknown method '{name}'; known methods: {string.Join(", ", All.Select(m => m.Name))} (or all)");

    /// <summary>Parses "name:key=value:..." into the name and its options.</summary>
    public static (string Name, Dictionary<string, string> Options) ParseSpec(string spec)
    {
        var parts = spec.Trim().Split(':');
        string name = parts[0].Trim();
        if (name.Length == 0) throw new MethodOptionException($"method spec '{spec}': no method name before the options");
        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in parts.Skip(1))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0 || eq == part.Length - 1)
                throw new MethodOptionException($"method spec '{spec}': option '{part}' is not key=value");
            string key = part[..eq].Trim();
            if (!options.TryAdd(key, part[(eq + 1)..].Trim()))
                throw new MethodOptionException($"method spec '{spec}': option '{key}' is given twice");
        }
        return (name, options);
    }

    /// <summary>
    /// Resolves a comma-separated list of specs (or "all") into factories, checking every option now (each
    /// method makes one session and disposes it). <paramref name="skipped"/> receives why a method of "all" was left out.
    /// </summary>
    public static List<SessionFactory> Resolve(string specs, MethodContext context, Action<string>? skipped = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        var list = specs.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (list.Length == 0) throw new MethodOptionException("--methods: give at least one method (or all)");
        var result = new List<SessionFactory>();
        try
        {
            foreach (var spec in list)
            {
                if (spec == "all")
                {
                    foreach (var m in All)
                    {
                        if (m.Requires == "adapter" && context.AdapterFolder is null)
                        {
                            skipped?.Invoke($"{m.Name}: needs --adapter (a trained adapter folder)");
                            continue;
                        }
                        if (m.Requires == "adapter" && m.AcceptsAdapter is { } accepts && !accepts(context.AdapterFolder!))
                        {
                            skipped?.Invoke($"{m.Name}: the adapter in '{context.AdapterFolder}' is not one of its adapters");
                            continue;
                        }
                        result.Add(Create(m, new Dictionary<string, string>(), context));
                    }
                    continue;
                }
                var (name, options) = ParseSpec(spec);
                result.Add(Create(Find(name), options, context));
            }
            var duplicate = result.GroupBy(f => f.Label).FirstOrDefault(g => g.Count() > 1);
            if (duplicate is not null) throw new MethodOptionException($"--methods: '{duplicate.Key}' is listed twice");
            return result;
        }
        catch
        {
            foreach (var f in result) f.Dispose();
            throw;
        }
    }

    /// <summary>One method with the given options, checked by making (and disposing) one session.</summary>
    public static SessionFactory Create(MethodDescriptor method, IReadOnlyDictionary<string, string> given, MethodContext context)
    {
        var options = new MethodOptions(method.Name, given);
        IDisposable? owned = null;
        var make = method.Prepare(context, options);
        options.RejectUnknown(method.Options.Select(o => o.Name));
        if (make.Target is IDisposable d) owned = d;   // a maker that owns resources (UIO's loaded adapter) is released with the factory
        using (make()) { }
        string label = given.Count == 0 ? method.Name : $"{method.Name} ({string.Join(", ", given.OrderBy(p => p.Key).Select(p => $"{p.Key}={p.Value}"))})";
        return new SessionFactory(label, method.Name, options.Resolved, make, owned);
    }

    private static IEnumerable<MethodDescriptor> BuiltIn()
    {
        yield return new("base", "the base model alone: its last window, re-read in strides (sliding window with re-computation)",
            [new("window", "trained window", "tokens read at once"), new("keep", "window/2", "tokens re-read when the window slides")],
            (ctx, o) =>
            {
                int w = o.Int("window", ctx.Model.Config.MaxSeqLen, 2);
                int keep = o.Int("keep", w / 2, 0, w - 1);
                return () => new BaseWindowSession(ctx.Model, w, keep);
            });
        yield return new("full", "full attention over the whole stream at true positions (past the window: extrapolation, marked)",
            [], (ctx, _) => () => new FullAttentionSession(ctx.Model));
        yield return new("pi", "Position Interpolation: every RoPE frequency divided by the factor; full attention",
            [new("factor", "8", "scale s (positions m -> m/s)")],
            (ctx, o) => Scaled(ctx, o, RopeScalingKind.Linear));
        yield return new("ntk", "NTK-aware RoPE: base b' = b s^(d/(d-2)); full attention",
            [new("factor", "8", "scale s")],
            (ctx, o) => Scaled(ctx, o, RopeScalingKind.NtkAware));
        yield return new("dynamic-ntk", "dynamic NTK: the NTK base follows the stream length (b' = b (s L_cur/L - (s-1))^(d/(d-2))); full attention",
            [new("factor", "2", "scale s")],
            (ctx, o) =>
            {
                double s = o.Double("factor", 2, 1, 1e6);
                return () => new FullAttentionSession(ctx.Model, len => RopeScalingMethods.Scaled(ctx.Model, RopeScalingKind.DynamicNtk, s, len), long.MaxValue);
            });
        yield return new("yarn", "YaRN: ramp between interpolation and extrapolation per frequency, attention temperature 0.1 ln s + 1; full attention",
            [new("factor", "8", "scale s"), new("beta-fast", "32", "ramp start (rotations)"), new("beta-slow", "1", "ramp end (rotations)")],
            (ctx, o) =>
            {
                double s = o.Double("factor", 8, 1, 1e6), fast = o.Double("beta-fast", 32, 0), slow = o.Double("beta-slow", 1, 0);
                var table = RopeScalingMethods.Scaled(ctx.Model, RopeScalingKind.Yarn, s, 0, fast, slow);
                return () => new FullAttentionSession(ctx.Model, _ => table, Range(ctx, s));
            });
        yield return new("abf", "a raised RoPE base (Llama 2 Long's adjusted base frequency) without training; full attention",
            [new("theta", "50 x the model's base", "the new RoPE base")],
            (ctx, o) =>
            {
                double theta = o.Double("theta", 50.0 * ctx.Model.Config.RopeTheta, 1.0000001);
                var table = RopeScalingMethods.RaisedBase(ctx.Model, theta);
                return () => new FullAttentionSession(ctx.Model, _ => table);
            });
        yield return new("truncated-rope", "Giraffe's truncated basis: frequencies >= high kept, in (low, high) set to rho, <= low set to 0; full attention",
            [new("high", "2 pi / window", "frequencies at or above are kept"), new("low", "high / 4", "frequencies at or below become 0"), new("rho", "low", "value between the cutoffs")],
            (ctx, o) =>
            {
                double high = o.Double("high", 2 * Math.PI / ctx.Model.Config.MaxSeqLen, 0);
                double low = o.Double("low", high / 4, 0, high);
                double rho = o.Double("rho", low, 0);
                var table = RopeScalingMethods.Truncated(ctx.Model, low, high, rho);
                return () => new FullAttentionSession(ctx.Model, _ => table);
            });
        yield return new("streaming", "StreamingLLM: attention sinks + a rolling window, positions by cache index",
            [new("sinks", "4", "first tokens always kept"), new("window", "trained window - sinks", "most recent tokens kept")],
            (ctx, o) =>
            {
                int sinks = o.Int("sinks", 4, 0, ctx.Model.Config.MaxSeqLen - 1);
                int window = o.Int("window", ctx.Model.Config.MaxSeqLen - sinks, 1);
                return () => new StreamingLlm(ctx.Model, window, sinks);
            });
        yield return new("lm-infinite", "LM-Infinite: Lambda-shaped mask (first global + last local tokens), distances capped",
            [new("global", "10", "first tokens every query sees"), new("local", "trained window", "most recent tokens each query sees"),
             new("cap", "trained window - 1", "largest distance RoPE is given")],
            (ctx, o) =>
            {
                int window = ctx.Model.Config.MaxSeqLen;
                int cap = o.Int("cap", window - 1, 1);
                int local = o.Int("local", Math.Min(window, cap + 1), 2, cap + 1);
                int global = o.Int("global", Math.Min(10, local - 1), 0, local - 1);
                return () => new LmInfiniteSession(ctx.Model, global, local, cap);
            });
        yield return new("recurrence", "Transformer-XL-style recurrence: each segment attends to the cached keys/values of the previous one, positions continuing",
            [new("segment", "window / 2", "segment length l")],
            (ctx, o) =>
            {
                int l = o.Int("segment", Math.Max(1, ctx.Model.Config.MaxSeqLen / 2), 1);
                return () => new RecurrenceSession(ctx.Model, l);
            });
        yield return new("knn", "Unlimiformer-style kNN attention: local window + per-head exact top-k of all earlier keys",
            [new("k", "window / 8", "keys retrieved per head and query"), new("window", "trained window / 2", "local tokens"),
             new("positions", "capped", "capped (retrieved keys at distance window) | absolute")],
            (ctx, o) =>
            {
                int k = o.Int("k", Math.Max(1, ctx.Model.Config.MaxSeqLen / 8), 1);
                int window = o.Int("window", Math.Max(1, ctx.Model.Config.MaxSeqLen / 2), 1);
                var positions = o.Choice("positions", "capped", "capped", "absolute") == "capped" ? KnnPositions.Capped : KnnPositions.Absolute;
                return () => new KnnAttentionSession(ctx.Model, k, window, positions);
            });
        yield return new("uio", "UIO-LLMs: segments compressed into memory by a trained encoder and transfer head (needs --adapter)",
            [new("batch", "8", "segments compressed per encoder call")],
            (ctx, o) =>
            {
                int batch = o.Int("batch", 8, 1);
                string folder = ctx.AdapterFolder ?? throw new MethodOptionException("method 'uio': needs a trained adapter folder (--adapter)");
                // Lengths past UIO's position budget are read (extrapolation) and marked out of the trained range.
                var uio = UioAdapter.Load(ctx.Model, folder, c => c with { AllowExtrapolation = true });
                return new UioMaker(uio, batch).Make;
            }, Requires: "adapter", AcceptsAdapter: IsUioAdapter);
    }

    private static long Range(MethodContext ctx, double factor) => (long)Math.Min(long.MaxValue / 2, factor * ctx.Model.Config.MaxSeqLen);

    private static Func<ILongContextSession> Scaled(MethodContext ctx, MethodOptions o, RopeScalingKind kind)
    {
        double s = o.Double("factor", 8, 1, 1e6);
        var table = RopeScalingMethods.Scaled(ctx.Model, kind, s);
        return () => new FullAttentionSession(ctx.Model, _ => table, Range(ctx, s));
    }

    /// <summary>Whether <paramref name="folder"/> holds a UIO adapter (its config reads as UIO's).</summary>
    private static bool IsUioAdapter(string folder)
    {
        try
        {
            UioAdapter.ReadManifest(folder);
            return true;
        }
        catch (ModelFormatException)
        {
            return false;
        }
    }

    /// <summary>Owns the loaded adapter for the factory's lifetime (disposed with it).</summary>
    private sealed class UioMaker(UioModel uio, int batch) : IDisposable
    {
        public ILongContextSession Make() => new UioSession(uio, batch);
        public void Dispose() => uio.Dispose();
    }
}
