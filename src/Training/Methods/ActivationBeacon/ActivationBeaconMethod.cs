using System.Globalization;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Methods.ActivationBeacon;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods.ActivationBeacon;

/// <summary>
/// Activation Beacon as a trainable method (<see cref="ActivationBeaconModel"/>): only the beacon embedding and the
/// beacons' Q/K/V/O projections train, on the next-token cross-entropy of the raw tokens, window by window, with
/// gradients through every earlier window's beacons. Each document draws its compression ratio from the training
/// ratios with the seed of <see cref="Accumulate(ReadOnlySpan{int}, ReadOnlySpan{int}, int)"/>; inference uses the fixed <c>ratio</c>.
/// Options: <c>window</c> (W), <c>ratio-min</c> and <c>ratio-max</c> (training draws one of the powers of two in
/// [ratio-min, ratio-max] that divide W, uniformly), <c>ratio</c> (inference).
/// </summary>
public sealed class ActivationBeaconMethod : ITrainableMethod
{
    /// <summary>The registry name.</summary>
    public const string MethodName = "activation-beacon";

    private readonly Dictionary<string, string> resolved;
    private readonly int[] ratios;

    /// <summary>The registry entry (the lead registers it with <see cref="TrainableMethods.Register"/>).</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MethodName,
        "Activation Beacon: W/alpha beacons per window with their own Q/K/V/O projections; raw K/V of earlier windows dropped",
        [
            new MethodOptionInfo("window", "min(1024, context)", "raw tokens per window (W)"),
            new MethodOptionInfo("ratio-min", "2", "smallest training compression ratio (a power of two)"),
            new MethodOptionInfo("ratio-max", "128", "largest training compression ratio; each document draws one of the powers of two in [ratio-min, ratio-max] dividing W"),
            new MethodOptionInfo("ratio", "8", "compression ratio at inference (divides W)"),
        ],
        (model, options, _) => new ActivationBeaconMethod(model, options));

    /// <exception cref="MethodOptionException">An option is out of range, or no training ratio divides the window.</exception>
    /// <exception cref="ArgumentException">The base does not fit (trainable, LoRA attached).</exception>
    public ActivationBeaconMethod(LlamaModel baseModel, MethodOptions options)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        var c = baseModel.Config;
        int window = options.Int("window", Math.Min(1024, c.MaxSeqLen), 1, c.MaxSeqLen);
        int min = options.Int("ratio-min", 2, 1);
        int max = options.Int("ratio-max", 128, 1);
        int ratio = options.Int("ratio", 8, 1);
        if (!IsPowerOfTwo(min) || !IsPowerOfTwo(max) || min > max)
            throw new MethodOptionException($"method '{MethodName}': ratio-min ({min}) and ratio-max ({max}) must be powers of two with ratio-min <= ratio-max");
        var list = new List<int>();
        for (long r = min; r <= max; r *= 2)
            if (window % r == 0) list.Add((int)r);
        if (list.Count == 0)
            throw new MethodOptionException($"method '{MethodName}': no power of two in [{min}, {max}] divides the window {window}");
        if (window % ratio != 0)
            throw new MethodOptionException($"method '{MethodName}': the inference ratio {ratio} does not divide the window {window}");
        ratios = [.. list];
        Ratio = ratio;
        resolved = new Dictionary<string, string>(options.Resolved, StringComparer.Ordinal);
        Model = new ActivationBeaconModel(baseModel, window);
        // No weight decay: it would pull the beacon projections (copies of the base's) towards zero, not towards the base.
        Parameters = [.. Model.Parameters().Select(p => new AdamWParameter(p, Decay: false))];
    }

    private static bool IsPowerOfTwo(int v) => v > 0 && (v & (v - 1)) == 0;

    public string Name => MethodName;
    public LlamaModel Base => Model.Base;
    /// <summary>The beacon model (parameters and the forward).</summary>
    public ActivationBeaconModel Model { get; }
    public IReadOnlyList<AdamWParameter> Parameters { get; }
    /// <summary>The compression ratios training draws from.</summary>
    public IReadOnlyList<int> TrainingRatios => ratios;
    /// <summary>The compression ratio of <see cref="OpenSession()"/>.</summary>
    public int Ratio { get; }
    /// <summary>The resolved options (what the adapter records).</summary>
    public IReadOnlyDictionary<string, string> Options => resolved;

    /// <summary>The compression ratio a document trained with <paramref name="seed"/> uses.</summary>
    public int RatioFor(int seed) => ratios[new Random(seed).Next(ratios.Length)];

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed) =>
        Accumulate(document, targets, seed, RatioFor(seed));

    /// <summary><see cref="Accumulate(ReadOnlySpan{int}, ReadOnlySpan{int}, int)"/> at a given compression ratio.</summary>
    /// <exception cref="ArgumentException">Fewer than 2 tokens, targets of the wrong length, or a ratio that does not divide W.</exception>
    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed, int ratio) =>
        Run(document, targets, ratio, backward: true);

    /// <summary>The loss <see cref="Accumulate(ReadOnlySpan{int}, ReadOnlySpan{int}, int, int)"/> would report, without a graph or gradients.</summary>
    public DocumentLoss Loss(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int ratio) =>
        Run(document, targets, ratio, backward: false);

    private DocumentLoss Run(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int ratio, bool backward)
    {
        if (document.Length < 2)
            throw new ArgumentException($"{MethodName}: a document needs at least 2 tokens, got {document.Length}", nameof(document));
        if (targets.Length != document.Length - 1)
            throw new ArgumentException($"{MethodName}: {targets.Length} targets for a document of {document.Length} tokens (expected {document.Length - 1})", nameof(targets));
        Model.BeaconsPerWindow(ratio);
        var inputs = document[..^1];
        int lastScored = -1;
        for (int t = 0; t < targets.Length; t++)
            if (targets[t] != -100) lastScored = t;
        if (lastScored < 0) return new DocumentLoss(0, 0, 0);

        int w = Model.Window;
        using var tape = new Tape(Base.Accelerator, "beacon.accumulate");
        using var scope = backward ? default(Tape.NoGradScope?) : tape.NoGrad();
        var memory = new BeaconMemory(Base.Config.Layers);
        Var? total = null;
        int units = 0, tokens = 0;
        for (int start = 0; start <= lastScored; start += w)
        {
            int count = Math.Min(w, inputs.Length - start);
            bool compress = count == w && start + w <= lastScored;
            var hidden = Model.RunWindow(tape, inputs.Slice(start, count), memory, ratio, compress);
            var windowTargets = targets.Slice(start, count);
            int scored = 0;
            foreach (int id in windowTargets)
                if (id != -100) scored++;
            if (scored == 0) continue;
            var loss = Base.Head.CrossEntropy(tape, hidden, windowTargets);
            total = total is null ? loss : tape.Add(total, loss);
            units++;
            tokens += scored;
        }
        double value = total!.Value.ToArray()[0];
        if (backward) tape.Backward(total);
        return new DocumentLoss(value, units, tokens);
    }

    private IEnumerable<(string Name, Kernels.Tensor Value)> Tensors() =>
        Model.Parameters().Select(p => (p.Value.Name ?? throw new InvalidOperationException($"{MethodName}: an unnamed parameter (internal error)"), p.Value));

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, MethodName, resolved, Tensors(), baseModelNameOrPath, Base.Config);

    public void LoadAdapter(string folder) => TrainableMethods.LoadAdapter(folder, MethodName, resolved, Tensors());

    public ITrainableMethod? CreateReplica() => new ActivationBeaconMethod(Base, new MethodOptions(MethodName, resolved));

    public ILongContextSession OpenSession() => Model.OpenSession(Ratio);

    /// <summary>A session at another compression ratio (a divisor of W).</summary>
    public ILongContextSession OpenSession(int ratio) => Model.OpenSession(ratio);

    public void Dispose() => Model.Dispose();

    public override string ToString() =>
        $"{MethodName} ({string.Join(", ", resolved.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Key}={p.Value}")))})";
}
