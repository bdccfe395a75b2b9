using System.Globalization;
using System.Text.Json.Nodes;
using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods;

/// <summary>
/// The Recurrent Memory Transformer (<see cref="RmtModel"/>) as a trainable method: the initial memory and LoRA on q
/// and v are fitted on a frozen base. A document's inputs (every token but the last) are cut into segments of l
/// tokens (the last may be shorter); segment s reads the memory segment s-1 wrote. The loss is the sum over scored
/// segments of the mean next-token cross-entropy of their scored tokens (<see cref="DocumentLoss.Units"/> = scored
/// segments, as UIO). Truncated BPTT (<see cref="Bptt"/> = k2): the gradient crosses a memory transition only inside
/// the last k2 segments of the document (every earlier memory is read as a stop-gradient copy); -1 is full BPTT.
/// Options: segment, memory, rank, alpha, bptt.
/// </summary>
public sealed class RmtMethod : ITrainableMethod
{
    /// <summary>The registry name.</summary>
    public const string MethodName = "rmt";

    /// <summary>The method as the trainable registry lists it (registered by the caller).</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MethodName,
        "Recurrent Memory Transformer: [memory ; segment ; memory] per segment, the write rows' last states are the next memory; learned initial memory + LoRA on q, v; truncated BPTT",
        [
            new("segment", "window - 2 x memory", "ordinary tokens per segment"),
            new("memory", "min(10, window / 4)", "memory rows n (read and write)"),
            new("rank", "8", "LoRA rank on q and v"),
            new("alpha", "16", "LoRA alpha (scale alpha / rank)"),
            new("bptt", "-1", "segments the gradient flows back through (k2); -1: all"),
        ],
        (baseModel, options, seed) => Create(baseModel, options, seed));

    private readonly Dictionary<string, string> options;
    private readonly AdamWParameter[] parameters;

    /// <summary>A fresh method (memory and LoRA A drawn from <paramref name="seed"/>, LoRA B zero).</summary>
    /// <param name="bptt">k2: segments the gradient flows back through (>= 1), or -1 for all.</param>
    public RmtMethod(LlamaModel baseModel, RmtConfig config, int bptt = -1, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        if (bptt == 0 || bptt < -1) throw new ArgumentException($"RMT: bptt must be -1 (full) or at least 1 segment, got {bptt}", nameof(bptt));
        Model = new RmtModel(baseModel, config, seed);
        Bptt = bptt;
        options = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["segment"] = config.SegmentLength.ToString(CultureInfo.InvariantCulture),
            ["memory"] = config.MemoryTokens.ToString(CultureInfo.InvariantCulture),
            ["rank"] = config.Rank.ToString(CultureInfo.InvariantCulture),
            ["alpha"] = config.Alpha.ToString("R", CultureInfo.InvariantCulture),
            ["bptt"] = bptt.ToString(CultureInfo.InvariantCulture),
        };
        parameters = Model.NamedParameters().Select(p => new AdamWParameter(p.Parameter, Decay: !ReferenceEquals(p.Parameter, Model.Memory))).ToArray();
    }

    /// <summary>Reads the options (segment, memory, rank, alpha, bptt) and builds a fresh method.</summary>
    /// <exception cref="MethodOptionException">An option is malformed or out of range (the message names it).</exception>
    public static RmtMethod Create(LlamaModel baseModel, MethodOptions options, int seed)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        int window = baseModel.Config.MaxSeqLen;
        if (window < 3) throw new MethodOptionException($"method '{MethodName}': the base's window of {window} tokens cannot hold [memory ; segment ; memory]");
        int memory = options.Int("memory", Math.Clamp(window / 4, 1, 10), 1, (window - 1) / 2);
        int segment = options.Int("segment", window - 2 * memory, 1, window - 2 * memory);
        int rank = options.Int("rank", 8, 1);
        double alpha = options.Double("alpha", 16, 1e-6, 1e6);
        int bptt = options.Int("bptt", -1, -1);
        if (bptt == 0) throw new MethodOptionException($"method '{MethodName}': option bptt must be -1 (full) or at least 1 segment, got 0");
        return new RmtMethod(baseModel, new RmtConfig(segment, memory, rank, alpha), bptt, seed);
    }

    public string Name => MethodName;
    public LlamaModel Base => Model.Base;

    /// <summary>The model: its memory parameter, LoRA and segment forward.</summary>
    public RmtModel Model { get; }

    /// <summary>k2: segments the gradient flows back through; -1 for all.</summary>
    public int Bptt { get; }

    /// <summary>The resolved options (what a spec with them would rebuild).</summary>
    public IReadOnlyDictionary<string, string> Options => options;

    /// <summary>The initial memory (no weight decay), then every LoRA A and B (decayed).</summary>
    public IReadOnlyList<AdamWParameter> Parameters => parameters;

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed) => Run(document, targets, backward: true);

    /// <summary>The loss <see cref="Accumulate"/> would report, without any gradient (validation).</summary>
    public DocumentLoss Evaluate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets) => Run(document, targets, backward: false);

    private DocumentLoss Run(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, bool backward)
    {
        CheckDocument(Name, document, targets);
        int l = Model.Config.SegmentLength, inputs = document.Length - 1;
        int segments = (inputs + l - 1) / l;
        // Segments [linked, segments) share one tape: the gradient crosses their memory transitions. Each earlier
        // segment runs on its own tape and hands on a copy of its memory (a stop-gradient).
        int linked = Bptt == -1 ? 0 : Math.Max(0, segments - Bptt);
        var acc = Base.Accelerator;
        double total = 0;
        int units = 0, tokens = 0;
        Tensor? carried = null;
        try
        {
            for (int s = 0; s < linked; s++)
            {
                using var tape = new Tape(acc, $"rmt segment {s}");
                using var scope = backward ? default(Tape.NoGradScope?) : tape.NoGrad();
                var memory = carried is null ? Model.Memory : Var.Constant(carried);
                var (loss, scored) = SegmentLoss(tape, memory, document, targets, s, write: true, out var written);
                if (loss is not null)
                {
                    total += loss.Value.ToArray()[0];
                    units++;
                    tokens += scored;
                    if (backward) tape.Backward(loss);
                }
                carried ??= acc.Allocate([Model.Config.MemoryTokens, Base.Config.Dim], "rmt.carried");
                acc.Kernels.Copy(written!.Value, carried);
            }
            {
                using var tape = new Tape(acc, $"rmt segments {linked}..{segments - 1}");
                using var scope = backward ? default(Tape.NoGradScope?) : tape.NoGrad();
                var memory = carried is null ? Model.Memory : Var.Constant(carried);
                Var? sum = null;
                for (int s = linked; s < segments; s++)
                {
                    var (loss, scored) = SegmentLoss(tape, memory, document, targets, s, write: s + 1 < segments, out var written);
                    if (loss is not null)
                    {
                        total += loss.Value.ToArray()[0];
                        units++;
                        tokens += scored;
                        sum = sum is null ? loss : tape.Add(sum, loss);
                    }
                    if (written is not null) memory = written;
                }
                if (backward && sum is not null) tape.Backward(sum);
            }
        }
        finally
        {
            carried?.Dispose();
        }
        return new DocumentLoss(total, units, tokens);
    }

    /// <summary>Segment <paramref name="s"/>'s forward and, when it scores a token, its mean cross-entropy.</summary>
    private (Var? Loss, int Scored) SegmentLoss(Tape tape, Var memory, ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int s, bool write, out Var? written)
    {
        int l = Model.Config.SegmentLength, inputs = document.Length - 1;
        int start = s * l, length = Math.Min(l, inputs - start);
        var segmentTargets = targets.Slice(start, length);
        int scored = Scored(segmentTargets);
        var result = Model.Segment(tape, memory, document.Slice(start, length), write);
        written = result.Written;
        return scored == 0 ? (null, 0) : (Base.Head.CrossEntropy(tape, result.Hidden, segmentTargets), scored);
    }

    /// <summary>Targets that are scored (not -100).</summary>
    internal static int Scored(ReadOnlySpan<int> targets)
    {
        int count = 0;
        foreach (int t in targets)
            if (t != -100) count++;
        return count;
    }

    /// <summary>Throws when the targets do not match the document or nothing can be predicted.</summary>
    internal static void CheckDocument(string method, ReadOnlySpan<int> document, ReadOnlySpan<int> targets)
    {
        if (document.Length < 2)
            throw new ArgumentException($"{method}: a document of {document.Length} token(s) has nothing to predict; it needs at least 2 tokens", nameof(document));
        if (targets.Length != document.Length - 1)
            throw new ArgumentException($"{method}: {targets.Length} targets for a document of {document.Length} tokens; expected {document.Length - 1}", nameof(targets));
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, Name, options, Model.NamedParameters().Select(p => (p.Name, p.Parameter.Value)), baseModelNameOrPath, Base.Config,
            LoraFields(Model.Config.Rank, Model.Config.Alpha));

    public void LoadAdapter(string folder) =>
        TrainableMethods.LoadAdapter(folder, Name, options, Model.NamedParameters().Select(p => (p.Name, p.Parameter.Value)));

    /// <summary>PEFT-style fields an adapter of LoRA on q and v adds to its config (informative; the method options are authoritative).</summary>
    internal static Dictionary<string, JsonNode?> LoraFields(int rank, double alpha) => new()
    {
        ["peft_type"] = "LORA",
        ["r"] = rank,
        ["lora_alpha"] = alpha,
        ["target_modules"] = new JsonArray("q_proj", "v_proj"),
    };

    public ITrainableMethod? CreateReplica() => new RmtMethod(Base, Model.Config, Bptt, seed: 0);

    public ILongContextSession OpenSession() => new RmtSession(Model);

    public void Dispose() => Model.Dispose();
}
