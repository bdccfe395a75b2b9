using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods.ActivationBeacon;

/// <summary>
/// The beacon projections of one layer: trainable copies of the base's q/k/v/o projections (biases included). The last
/// layer has only k and v: the beacons' last-layer attention output is never read (only their K/V are kept), so its
/// q and o would never receive a gradient; there the beacon rows use the base's q and o.
/// </summary>
public sealed class BeaconLayer
{
    internal BeaconLayer(Attention attention, int layer, bool last)
    {
        string p = $"beacon.layers.{layer}.self_attn.";
        Q = last ? null : Copy(attention.Q, p + "q_proj");
        K = Copy(attention.K, p + "k_proj");
        V = Copy(attention.V, p + "v_proj");
        O = last ? null : Copy(attention.O, p + "o_proj");
    }

    private static Linear Copy(Linear source, string name)
    {
        var acc = source.Weight.Accelerator;
        var weight = acc.FromArray(source.Weight.Value.ToArray(), source.Weight.Value.Shape, name + ".weight");
        var bias = source.Bias is { } b ? Var.Leaf(acc.FromArray(b.Value.ToArray(), b.Value.Shape, name + ".bias"), requiresGrad: true) : null;
        return new Linear(Var.Leaf(weight, requiresGrad: true)) { Bias = bias };
    }

    /// <summary>Null in the last layer.</summary>
    public Linear? Q { get; }
    public Linear K { get; }
    public Linear V { get; }
    /// <summary>Null in the last layer.</summary>
    public Linear? O { get; }

    /// <summary>The projection that replaces <paramref name="which"/> for beacon rows; null: the base's.</summary>
    public Linear? this[AttentionProjection which] => which switch
    {
        AttentionProjection.Query => Q,
        AttentionProjection.Key => K,
        AttentionProjection.Value => V,
        _ => O,
    };

    /// <summary>Weights (and biases) in the order q, k, v, o (those the layer has).</summary>
    public IEnumerable<Var> Parameters()
    {
        foreach (var linear in new[] { Q, K, V, O })
        {
            if (linear is null) continue;
            yield return linear.Weight;
            if (linear.Bias is { } b) yield return b;
        }
    }
}

/// <summary>
/// The beacons' per-layer keys (un-rotated) and values kept from every compressed window, oldest first: the only
/// memory of the text before the current window. Rows grow by W/alpha per compressed window.
/// </summary>
public sealed class BeaconMemory
{
    private readonly List<Var>[] keys, values;

    public BeaconMemory(int layers)
    {
        keys = new List<Var>[layers];
        values = new List<Var>[layers];
        for (int l = 0; l < layers; l++) { keys[l] = []; values[l] = []; }
    }

    /// <summary>Beacon rows held (per layer).</summary>
    public int Rows { get; private set; }

    /// <summary>Compressed windows held.</summary>
    public int Windows => keys.Length == 0 ? 0 : keys[0].Count;

    /// <summary>Every window's keys of a layer, un-rotated, each [rows, kv_heads * head_dim].</summary>
    public IReadOnlyList<Var> KeysOf(int layer) => keys[layer];

    /// <summary>Every window's values of a layer, each [rows, kv_heads * head_dim].</summary>
    public IReadOnlyList<Var> ValuesOf(int layer) => values[layer];

    /// <summary>Adds one window's beacons: per layer keys and values [rows, kv_dim].</summary>
    public void Append(IReadOnlyList<Var> windowKeys, IReadOnlyList<Var> windowValues)
    {
        if (windowKeys.Count != keys.Length || windowValues.Count != keys.Length)
            throw new ArgumentException($"BeaconMemory: {windowKeys.Count} key and {windowValues.Count} value layers for a {keys.Length}-layer memory");
        int rows = windowKeys[0].Value.Dim(0);
        for (int l = 0; l < keys.Length; l++)
        {
            if (windowKeys[l].Value.Dim(0) != rows || windowValues[l].Value.Dim(0) != rows)
                throw new ArgumentException($"BeaconMemory: layer {l} holds a different number of beacon rows than layer 0 ({rows})");
            keys[l].Add(windowKeys[l]);
            values[l].Add(windowValues[l]);
        }
        Rows += rows;
    }
}

/// <summary>
/// Activation Beacon over a frozen Llama-family model (BASELINES.md; MEMORY.md section 2). The stream is read in
/// windows of W raw tokens; W/alpha beacon tokens (one learned embedding, initialised from <c>&lt;/s&gt;</c>) are
/// appended to a window and go through the same blocks with their own trainable Q/K/V/O projections (copies of the
/// base's, through <see cref="IRowProjections"/>), under the step-expansion mask: beacon i sees the beacons kept so
/// far, the first (i+1)*alpha raw tokens of its window, the beacons of its window before it and itself. The beacons'
/// per-layer K/V are kept; the raw K/V of the window are dropped, so the next window attends to
/// [all earlier beacons ; its own raw tokens (causal)], with RoPE positions 0, 1, ... over that combined sequence
/// (the window's beacons continue after its raw tokens).
/// </summary>
/// <remarks>
/// A base with local (sliding-window) layers (<see cref="LlamaConfig.LocalLayers"/>) is handled as UIO handles it
/// (<see cref="UioLlm.Model.Uio.UioModel.EncoderMaskAt"/> for the memory tokens, <see cref="LlamaConfig.DecoderMask"/> for the
/// tokens that are decoded): in a local layer (<see cref="MaskAt"/>)
/// <list type="bullet">
/// <item>the raw tokens keep the base's sliding window of <see cref="LlamaConfig.LocalWindow"/> positions, counted over
/// [kept beacons ; raw tokens]: raw token t (position B + t) sees the raw tokens t - LocalWindow + 1 .. t and, only when
/// t &lt; LocalWindow - 1, the last LocalWindow - 1 - t kept beacons, which hold the positions right before the window.
/// This is exactly what the base's own local layer does over a cache prefix, so the inference session (the base's
/// incremental decoding over the kept beacons' K/V) and the training forward agree, and a local layer never looks
/// farther back than the base's window;</item>
/// <item>the beacons keep the step-expansion rule of the global layers: beacon i reads every kept beacon, the raw tokens
/// of its interval [0, (i+1)*alpha) and the beacons of its window up to itself, whatever the distance (as UIO's memory
/// tokens read their whole span in a local layer).</item>
/// </list>
/// </remarks>
public sealed class ActivationBeaconModel : IDisposable
{
    private readonly BeaconLayer[] layers;

    /// <param name="window">W, the raw tokens of a window.</param>
    /// <exception cref="ArgumentException">The base is trainable or carries LoRA.</exception>
    /// <exception cref="ArgumentOutOfRangeException">W does not lie in [1, the base's context].</exception>
    public ActivationBeaconModel(LlamaModel baseModel, int window)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        if (baseModel.IsTrainable)
            throw new ArgumentException("ActivationBeacon: the base model was built with trainable weights; it must be frozen (trainable: false)", nameof(baseModel));
        if (baseModel.TrainableParameters().Any())
            throw new ArgumentException("ActivationBeacon: the base model has LoRA adapters attached; detach them first", nameof(baseModel));
        var c = baseModel.Config;
        if (window < 1 || window > c.MaxSeqLen)
            throw new ArgumentOutOfRangeException(nameof(window), $"ActivationBeacon: window {window} must lie in [1, {c.MaxSeqLen}] (the base's trained context)");
        Base = baseModel;
        Window = window;
        var init = baseModel.Weights.TokenEmbedding.Row(c.EosId).ToArray();
        BeaconEmbedding = Var.Leaf(baseModel.Accelerator.FromArray(init, [1, c.Dim], "beacon.embedding"), requiresGrad: true);
        layers = new BeaconLayer[c.Layers];
        for (int l = 0; l < layers.Length; l++) layers[l] = new BeaconLayer(baseModel.Blocks[l].Attention, l, last: l == layers.Length - 1);
    }

    public LlamaModel Base { get; }
    public int Window { get; }
    /// <summary>[1, dim]: the embedding every beacon token starts from.</summary>
    public Var BeaconEmbedding { get; }
    public IReadOnlyList<BeaconLayer> Layers => layers;

    /// <summary>Everything Activation Beacon trains: the beacon embedding, then each layer's q/k/v/o beacon projections.</summary>
    public IEnumerable<Var> Parameters() => layers.SelectMany(l => l.Parameters()).Prepend(BeaconEmbedding);

    /// <summary>
    /// The mask of layer <paramref name="layer"/> over [<paramref name="keptBeacons"/> kept beacons ; raw tokens ;
    /// <paramref name="beacons"/> beacons of the window] (queries: the raw tokens and the window's beacons): the
    /// memory-causal step expansion at stride <paramref name="ratio"/>; in a local base layer the raw tokens' rows keep
    /// the base's sliding window, which also covers the kept beacons (see the remarks of <see cref="ActivationBeaconModel"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The layer is not one of the base's, or a count is not positive (negative for the kept beacons).</exception>
    public AttentionMask MaskAt(int layer, int beacons, int ratio, int keptBeacons)
    {
        var c = Base.Config;
        if ((uint)layer >= (uint)c.Layers)
            throw new ArgumentOutOfRangeException(nameof(layer), $"ActivationBeacon: layer {layer} is not in [0, {c.Layers})");
        if (beacons < 1) throw new ArgumentOutOfRangeException(nameof(beacons), $"ActivationBeacon: {beacons} beacons; a compressed window has at least one");
        if (ratio < 1) throw new ArgumentOutOfRangeException(nameof(ratio), $"ActivationBeacon: compression ratio {ratio} must be positive");
        if (keptBeacons < 0) throw new ArgumentOutOfRangeException(nameof(keptBeacons), $"ActivationBeacon: {keptBeacons} kept beacons");
        return c.IsLocal(layer)
            ? AttentionMask.StepExpansion(beacons, ratio, prefixLength: keptBeacons, window: c.LocalWindow, memoryCausal: true, windowSpansPrefix: true)
            : AttentionMask.StepExpansion(beacons, ratio, prefixLength: keptBeacons, memoryCausal: true);
    }

    /// <summary>Beacons a full window of W raw tokens gets at compression ratio <paramref name="ratio"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The ratio is not a positive divisor of W.</exception>
    public int BeaconsPerWindow(int ratio)
    {
        if (ratio < 1 || Window % ratio != 0)
            throw new ArgumentOutOfRangeException(nameof(ratio), $"ActivationBeacon: compression ratio {ratio} must be a positive divisor of the window {Window}");
        return Window / ratio;
    }

    /// <summary>
    /// One window: raw tokens (at most W) after <paramref name="memory"/>; with <paramref name="compress"/> (only for
    /// a full window) its W/ratio beacons run too and their per-layer K/V are appended to <paramref name="memory"/>.
    /// Returns the final-normed hidden states [raw, dim] of the raw tokens (the head gives their next-token logits).
    /// Gradients flow into the beacon parameters through the memory, across windows, on a recording tape.
    /// </summary>
    public Var RunWindow(Tape tape, ReadOnlySpan<int> raw, BeaconMemory memory, int ratio, bool compress)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(memory);
        int w = raw.Length;
        if (w < 1 || w > Window)
            throw new ArgumentException($"ActivationBeacon: a window holds 1 .. {Window} raw tokens, got {w}", nameof(raw));
        int n = 0;
        if (compress)
        {
            if (w != Window) throw new ArgumentException($"ActivationBeacon: only a full window of {Window} tokens is compressed, got {w}", nameof(raw));
            n = BeaconsPerWindow(ratio);
        }
        var c = Base.Config;
        int b = memory.Rows, total = w + n;
        var x = Base.Embed(tape, raw);
        if (n > 0) x = tape.ConcatRows(x, tape.Embedding(BeaconEmbedding, new int[n]));
        var positions = new int[total];
        for (int t = 0; t < total; t++) positions[t] = b + t;
        var prefixPositions = new int[b];
        for (int t = 0; t < b; t++) prefixPositions[t] = t;
        var beaconRows = new int[n];
        for (int i = 0; i < n; i++) beaconRows[i] = w + i;

        var newKeys = new Var[c.Layers];
        var newValues = new Var[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            KvPrefix? prefix = null;
            if (b > 0)
            {
                var k = tape.Reshape(Concat(tape, memory.KeysOf(l)), b, c.KvHeads, c.HeadDim);
                var v = tape.Reshape(Concat(tape, memory.ValuesOf(l)), b, c.KvHeads, c.HeadDim);
                prefix = new KvPrefix(tape.Rope(k, prefixPositions, Base.Rope), v);
            }
            // Without beacons the base's decoder mask over [kept beacons ; raw tokens] (a local layer: its sliding window).
            var hook = n > 0 ? new BeaconRows(layers[l], beaconRows) : null;
            AttentionMask? mask = n > 0 ? MaskAt(l, n, ratio, b) : null;
            x = Base.Blocks[l].Forward(tape, x, positions, cache: null, prefix, hook, mask);
            if (hook is not null)
            {
                newKeys[l] = hook.Keys ?? throw new InvalidOperationException($"ActivationBeacon: layer {l} produced no beacon keys (internal error)");
                newValues[l] = hook.Values ?? throw new InvalidOperationException($"ActivationBeacon: layer {l} produced no beacon values (internal error)");
            }
        }
        if (n > 0) memory.Append(newKeys, newValues);
        return Base.FinalNorm.Forward(tape, n > 0 ? tape.SliceRows(x, 0, w) : x);
    }

    internal static Var Concat(Tape tape, IReadOnlyList<Var> parts) => parts.Count == 1 ? parts[0] : tape.ConcatRows(parts);

    /// <summary>
    /// Log-probabilities of every token of <paramref name="document"/> from the ones before it (NaN for the first),
    /// read window by window at ratio <paramref name="ratio"/>: the training forward, without a graph.
    /// </summary>
    public double[] ScoreDocument(ReadOnlySpan<int> document, int ratio)
    {
        BeaconsPerWindow(ratio);
        var result = new double[document.Length];
        if (document.IsEmpty) return result;
        using var tape = new Tape(Base.Accelerator, "beacon.score");
        using var _ = tape.NoGrad();
        var memory = new BeaconMemory(Base.Config.Layers);
        var inputs = document[..^1];
        int vocab = Base.Config.VocabSize;
        result[0] = double.NaN;
        for (int start = 0; start < inputs.Length; start += Window)
        {
            int w = Math.Min(Window, inputs.Length - start);
            bool last = start + w >= inputs.Length;
            var hidden = RunWindow(tape, inputs.Slice(start, w), memory, ratio, compress: !last);
            var logits = Base.Head.Forward(tape, hidden).Value.ToArray();
            for (int t = 0; t < w; t++)
                result[start + t + 1] = LogProbs.At(logits.AsSpan(t * vocab, vocab), document[start + t + 1]);
        }
        return result;
    }

    /// <summary>An inference session reading a stream at compression ratio <paramref name="ratio"/> through the current parameters.</summary>
    public ActivationBeaconSession OpenSession(int ratio) => new(this, ratio);

    public void Dispose()
    {
        foreach (var p in Parameters())
        {
            p.DisposeLeaf();
            p.Value.Dispose();
        }
    }

    /// <summary>The beacon rows' projections of one layer for one window; keeps the keys and values it produced.</summary>
    private sealed class BeaconRows(BeaconLayer layer, int[] rows) : IRowProjections
    {
        public IReadOnlyList<int> Rows => rows;
        public Var? Keys { get; private set; }
        public Var? Values { get; private set; }

        public Var Project(Tape tape, int layerIndex, AttentionProjection which, Linear baseProjection, Var input, Var baseOutput)
        {
            if (layer[which] is not { } own) return baseOutput;
            var y = own.Forward(tape, input);
            if (which == AttentionProjection.Key) Keys = y;
            else if (which == AttentionProjection.Value) Values = y;
            return y;
        }
    }
}
