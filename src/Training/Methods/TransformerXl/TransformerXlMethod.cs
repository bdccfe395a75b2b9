using System.Globalization;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods;

/// <summary>
/// Transformer-XL (<see cref="TransformerXlModel"/>) as a trainable method: LoRA on q and v fitted on a frozen base
/// while every segment attends to the stop-gradient keys and values of the previous one. A document's inputs (every
/// token but the last) are cut into segments of l tokens (the last may be shorter); each segment runs on its own
/// tape (forward, backward, free) and hands its keys and values on as a copy, so no gradient crosses a segment
/// boundary. The loss is the sum over scored segments of the mean next-token cross-entropy of their scored tokens
/// (<see cref="DocumentLoss.Units"/> = scored segments). Options: segment, rank, alpha.
/// </summary>
public sealed class TransformerXlMethod : ITrainableMethod
{
    /// <summary>The registry name.</summary>
    public const string MethodName = "transformer-xl";

    /// <summary>The method as the trainable registry lists it (registered by the caller).</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MethodName,
        "Transformer-XL: each segment attends to [stop-gradient(previous segment's keys/values) ; itself], positions continuing; LoRA on q, v",
        [
            new("segment", "window / 2", "segment length l"),
            new("rank", "8", "LoRA rank on q and v"),
            new("alpha", "16", "LoRA alpha (scale alpha / rank)"),
        ],
        (baseModel, options, seed) => Create(baseModel, options, seed));

    private readonly Dictionary<string, string> options;
    private readonly AdamWParameter[] parameters;

    /// <summary>A fresh method (LoRA A drawn from <paramref name="seed"/>, B zero: it starts as the base's recurrence).</summary>
    public TransformerXlMethod(LlamaModel baseModel, TransformerXlConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        Model = new TransformerXlModel(baseModel, config, seed);
        options = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["segment"] = config.SegmentLength.ToString(CultureInfo.InvariantCulture),
            ["rank"] = config.Rank.ToString(CultureInfo.InvariantCulture),
            ["alpha"] = config.Alpha.ToString("R", CultureInfo.InvariantCulture),
        };
        parameters = Model.Lora.NamedParameters().Select(p => new AdamWParameter(p.Parameter, Decay: true)).ToArray();
    }

    /// <summary>Reads the options (segment, rank, alpha) and builds a fresh method.</summary>
    /// <exception cref="MethodOptionException">An option is malformed or out of range (the message names it).</exception>
    public static TransformerXlMethod Create(LlamaModel baseModel, MethodOptions options, int seed)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        int window = baseModel.Config.MaxSeqLen;
        if (window < 2) throw new MethodOptionException($"method '{MethodName}': the base's window of {window} token(s) cannot hold two segments");
        int segment = options.Int("segment", window / 2, 1, window / 2);
        int rank = options.Int("rank", 8, 1);
        double alpha = options.Double("alpha", 16, 1e-6, 1e6);
        return new TransformerXlMethod(baseModel, new TransformerXlConfig(segment, rank, alpha), seed);
    }

    public string Name => MethodName;
    public LlamaModel Base => Model.Base;

    /// <summary>The model: its LoRA and segment forward.</summary>
    public TransformerXlModel Model { get; }

    /// <summary>The resolved options (what a spec with them would rebuild).</summary>
    public IReadOnlyDictionary<string, string> Options => options;

    /// <summary>Every LoRA A and B, layer by layer (all decayed).</summary>
    public IReadOnlyList<AdamWParameter> Parameters => parameters;

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed) => Run(document, targets, backward: true);

    /// <summary>The loss <see cref="Accumulate"/> would report, without any gradient (validation).</summary>
    public DocumentLoss Evaluate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets) => Run(document, targets, backward: false);

    private DocumentLoss Run(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, bool backward)
    {
        RmtMethod.CheckDocument(Name, document, targets);
        int l = Model.Config.SegmentLength, inputs = document.Length - 1;
        double total = 0;
        int units = 0, tokens = 0;
        TransformerXlCache? previous = null;
        try
        {
            for (int start = 0; start < inputs; start += l)
            {
                int length = Math.Min(l, inputs - start);
                var segmentTargets = targets.Slice(start, length);
                int scored = RmtMethod.Scored(segmentTargets);
                bool last = start + length >= inputs;
                // A segment with nothing scored still runs forward: the next segment reads its keys and values.
                using var tape = new Tape(Base.Accelerator, $"transformer-xl segment {start / l}");
                using var scope = backward && scored > 0 ? default(Tape.NoGradScope?) : tape.NoGrad();
                var hidden = Model.Segment(tape, document.Slice(start, length), previous, out var kv);
                if (scored > 0)
                {
                    var loss = Base.Head.CrossEntropy(tape, hidden, segmentTargets);
                    total += loss.Value.ToArray()[0];
                    units++;
                    tokens += scored;
                    if (backward) tape.Backward(loss);
                }
                if (last) break;
                var next = TransformerXlCache.Capture(kv);
                previous?.Dispose();
                previous = next;
            }
        }
        finally
        {
            previous?.Dispose();
        }
        return new DocumentLoss(total, units, tokens);
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, Name, options, Model.Lora.NamedParameters().Select(p => (p.Name, p.Parameter.Value)), baseModelNameOrPath, Base.Config,
            RmtMethod.LoraFields(Model.Config.Rank, Model.Config.Alpha));

    public void LoadAdapter(string folder) =>
        TrainableMethods.LoadAdapter(folder, Name, options, Model.Lora.NamedParameters().Select(p => (p.Name, p.Parameter.Value)));

    public ITrainableMethod? CreateReplica() => new TransformerXlMethod(Base, Model.Config, seed: 0);

    public ILongContextSession OpenSession() => new TransformerXlSession(Model);

    public void Dispose() => Model.Dispose();
}
