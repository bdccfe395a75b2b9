using System.Globalization;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods;

/// <summary>
/// Memorizing Transformers ("memorizing") and the Focused Transformer ("focused-transformer") as trainable methods
/// over <see cref="MemorizingModel"/>: a document's inputs (every token but the last) are cut into segments of l
/// tokens; each segment runs on its own tape (forward, backward, free), reading the kNN memory of all earlier
/// segments at the memory layer, and then appends its own memory-layer (key, value) pairs, detached, to that memory.
/// The loss is the sum over scored segments of the mean next-token cross-entropy of their scored tokens
/// (<see cref="DocumentLoss.Units"/> = scored segments). Trained: LoRA on q and v, and for "memorizing" the per-head
/// gate bias (initial -2: g = sigmoid(-2) = 0.12, so a fresh model leans on its local context).
/// <para>
/// Crossbatch (Focused Transformer, option negatives = n &gt; 0, training only): before the document's first segment,
/// the memory is filled with the pairs of n distractor segments: the document's inputs shuffled by a
/// <see cref="Random"/> seeded with the <c>seed</c> argument of <see cref="Accumulate"/> (Fisher-Yates), repeated
/// as needed to n x l tokens, read segment by segment (no gradient) by the current parameters. Their keys compete
/// with the document's own in every retrieval, so the model learns to tell relevant keys from look-alikes.
/// <see cref="Evaluate"/> and sessions use no distractors.
/// </para>
/// </summary>
public sealed class MemorizingMethod : ITrainableMethod
{
    /// <summary>The registry names.</summary>
    public const string MemorizingName = "memorizing", FocusedName = "focused-transformer";

    private static IReadOnlyList<MethodOptionInfo> CommonOptions =>
    [
        new("segment", "window / 2", "segment length l (local causal attention within a segment)"),
        new("layer", "layers - 2 (layers - 1 below 3 layers)", "the kNN memory layer"),
        new("topk", "8", "memory pairs retrieved per query and head (0: no retrieval)"),
        new("rank", "8", "LoRA rank on q and v"),
        new("alpha", "16", "LoRA alpha (scale alpha / rank)"),
        new("memory", "0", "most rows the kNN memory keeps, oldest dropped first (0: unlimited)"),
    ];

    /// <summary>Memorizing Transformers as the trainable registry lists it.</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MemorizingName,
        "Memorizing Transformers: one layer also attends to the top-k (key, value) of all earlier segments (kNN memory, no positions), mixed with local attention by a learned per-head gate; LoRA on q, v",
        CommonOptions, (baseModel, options, seed) => Create(baseModel, options, seed, gated: true));

    /// <summary>The Focused Transformer as the trainable registry lists it.</summary>
    public static TrainableMethodDescriptor FocusedDescriptor { get; } = new(FocusedName,
        "Focused Transformer: one layer attends to local keys and the top-k kNN memory pairs (no positions) in one softmax, trained crossbatch with distractor memories; LoRA on q, v",
        [.. CommonOptions, new("negatives", "1", "distractor segments put into the memory in training (crossbatch; 0: none)")],
        (baseModel, options, seed) => Create(baseModel, options, seed, gated: false));

    private readonly Dictionary<string, string> options;
    private readonly AdamWParameter[] parameters;

    /// <summary>A fresh method (LoRA A drawn from <paramref name="seed"/>, B zero; gate bias at its initial value).</summary>
    public MemorizingMethod(LlamaModel baseModel, MemorizingConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        Model = new MemorizingModel(baseModel, config, seed);
        options = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["segment"] = config.SegmentLength.ToString(CultureInfo.InvariantCulture),
            ["layer"] = config.Layer.ToString(CultureInfo.InvariantCulture),
            ["topk"] = config.TopK.ToString(CultureInfo.InvariantCulture),
            ["rank"] = config.Rank.ToString(CultureInfo.InvariantCulture),
            ["alpha"] = config.Alpha.ToString("R", CultureInfo.InvariantCulture),
            ["memory"] = config.MemoryRows.ToString(CultureInfo.InvariantCulture),
        };
        if (!config.Gated) options["negatives"] = config.Negatives.ToString(CultureInfo.InvariantCulture);
        parameters = Model.NamedParameters().Select(p => new AdamWParameter(p.Parameter, Decay: p.Parameter != Model.GateBias)).ToArray();
    }

    /// <summary>Reads the options and builds a fresh method.</summary>
    /// <exception cref="MethodOptionException">An option is malformed or out of range (the message names it).</exception>
    public static MemorizingMethod Create(LlamaModel baseModel, MethodOptions options, int seed, bool gated)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        var c = baseModel.Config;
        int window = c.MaxSeqLen;
        int segment = options.Int("segment", Math.Max(1, window / 2), 1, window);
        int layer = options.Int("layer", c.Layers >= 3 ? c.Layers - 2 : c.Layers - 1, 0, c.Layers - 1);
        int topk = options.Int("topk", 8, 0);
        int rank = options.Int("rank", 8, 1);
        double alpha = options.Double("alpha", 16, 1e-6, 1e6);
        int negatives = gated ? 0 : options.Int("negatives", 1, 0, 64);
        int memoryRows = options.Int("memory", 0, 0);
        var config = new MemorizingConfig(segment, layer, topk, rank, alpha, gated, negatives, MemoryRows: memoryRows);
        try
        {
            return new MemorizingMethod(baseModel, config, seed);
        }
        catch (ArgumentException e)
        {
            throw new MethodOptionException($"method '{config.Method}': {e.Message}");
        }
    }

    public string Name => Model.Config.Method;
    public LlamaModel Base => Model.Base;

    /// <summary>The model: its LoRA, gate and segment forward.</summary>
    public MemorizingModel Model { get; }

    /// <summary>The resolved options (what a spec with them would rebuild).</summary>
    public IReadOnlyDictionary<string, string> Options => options;

    /// <summary>Every LoRA A and B (decayed), then the gate bias (not decayed) when gated.</summary>
    public IReadOnlyList<AdamWParameter> Parameters => parameters;

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed) =>
        Run(document, targets, backward: true, Distractors(document, seed));

    /// <summary>The loss <see cref="Accumulate"/> would report with no distractors, without any gradient (validation).</summary>
    public DocumentLoss Evaluate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets) => Run(document, targets, backward: false, null);

    /// <summary>
    /// The crossbatch memory for a document and seed (null when negatives = 0): the pairs of the distractor segments
    /// described on the class, read at the current parameters.
    /// </summary>
    public KnnMemory? Distractors(ReadOnlySpan<int> document, int seed)
    {
        int n = Model.Config.Negatives;
        if (n == 0 || document.Length < 2) return null;
        var inputs = document[..^1].ToArray();
        var rng = new Random(seed);
        for (int i = inputs.Length - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (inputs[i], inputs[j]) = (inputs[j], inputs[i]);
        }
        var tokens = new int[n * Model.Config.SegmentLength];
        for (int i = 0; i < tokens.Length; i++) tokens[i] = inputs[i % inputs.Length];
        var memory = Model.NewMemory();
        Model.Fill(tokens, memory);
        return memory;
    }

    /// <summary>The loss (and, when <paramref name="backward"/>, its gradient) of a document whose memory starts as <paramref name="start"/> (copied).</summary>
    public DocumentLoss Run(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, bool backward, KnnMemory? start)
    {
        RmtMethod.CheckDocument(Name, document, targets);
        int l = Model.Config.SegmentLength, inputs = document.Length - 1;
        var memory = Model.NewMemory();
        if (start is not null) memory.Add(start);
        double total = 0;
        int units = 0, tokens = 0;
        for (int s = 0; s < inputs; s += l)
        {
            int length = Math.Min(l, inputs - s);
            var segmentTargets = targets.Slice(s, length);
            int scored = RmtMethod.Scored(segmentTargets);
            using var tape = new Tape(Base.Accelerator, $"{Name} segment {s / l}");
            using var scope = backward && scored > 0 ? default(Tape.NoGradScope?) : tape.NoGrad();
            var hidden = Model.Segment(tape, document.Slice(s, length), memory, out var kv, out _);
            if (scored > 0)
            {
                var loss = Base.Head.CrossEntropy(tape, hidden, segmentTargets);
                total += loss.Value.ToArray()[0];
                units++;
                tokens += scored;
                if (backward) tape.Backward(loss);
            }
            if (s + length < inputs) memory.Add(kv.RawKeys.Value, kv.Values.Value);
        }
        return new DocumentLoss(total, units, tokens);
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, Name, options, Model.NamedParameters().Select(p => (p.Name, p.Parameter.Value)), baseModelNameOrPath, Base.Config,
            RmtMethod.LoraFields(Model.Config.Rank, Model.Config.Alpha));

    public void LoadAdapter(string folder) =>
        TrainableMethods.LoadAdapter(folder, Name, options, Model.NamedParameters().Select(p => (p.Name, p.Parameter.Value)));

    public ITrainableMethod? CreateReplica() => new MemorizingMethod(Base, Model.Config, seed: 0);

    public ILongContextSession OpenSession() => new MemorizingSession(Model);

    public void Dispose() => Model.Dispose();
}
