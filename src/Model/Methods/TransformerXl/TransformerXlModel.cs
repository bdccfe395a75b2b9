using System.Globalization;
using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// The settings of a trained Transformer-XL: segment length l and the rank and alpha of the LoRA on q and v. A
/// segment reads [previous segment ; itself], so 2l must fit the base's trained window.
/// </summary>
public sealed record TransformerXlConfig(int SegmentLength, int Rank, double Alpha)
{
    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that does not fit <paramref name="baseConfig"/>.</summary>
    public void Validate(LlamaConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        if (SegmentLength < 1) throw new ArgumentException($"Transformer-XL: segment must be at least 1 token, got {SegmentLength}");
        if (Rank < 1) throw new ArgumentException($"Transformer-XL: rank must be at least 1, got {Rank}");
        if (!(Alpha > 0) || !double.IsFinite(Alpha))
            throw new ArgumentException($"Transformer-XL: alpha must be positive, got {Alpha.ToString("R", CultureInfo.InvariantCulture)}");
        if (2 * SegmentLength > baseConfig.MaxSeqLen)
            throw new ArgumentException($"Transformer-XL: 2 x segment {SegmentLength} = {2 * SegmentLength} positions exceed the base's trained window of {baseConfig.MaxSeqLen}");
    }
}

/// <summary>
/// The previous segment's per-layer keys (before RoPE) and values [rows, kv_heads, head_dim], copied out of the graph
/// that computed them: what the next segment attends to, carrying no gradient.
/// </summary>
public sealed class TransformerXlCache : IDisposable
{
    private readonly Tensor[] keys;
    private readonly Tensor[] values;

    private TransformerXlCache(Tensor[] keys, Tensor[] values)
    {
        this.keys = keys;
        this.values = values;
    }

    /// <summary>Copies a segment's keys and values (one <see cref="LayerKv"/> per layer) out of their tape.</summary>
    public static TransformerXlCache Capture(IReadOnlyList<LayerKv> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count == 0) throw new ArgumentException("TransformerXlCache.Capture: no layers", nameof(layers));
        var keys = new Tensor[layers.Count];
        var values = new Tensor[layers.Count];
        for (int l = 0; l < layers.Count; l++)
        {
            var k = layers[l].RawKeys.Value;
            var v = layers[l].Values.Value;
            keys[l] = k.Accelerator.Allocate(k.Shape, $"txl.cache.{l}.k");
            values[l] = v.Accelerator.Allocate(v.Shape, $"txl.cache.{l}.v");
            k.Accelerator.Kernels.Copy(k, keys[l]);
            v.Accelerator.Kernels.Copy(v, values[l]);
        }
        return new TransformerXlCache(keys, values);
    }

    /// <summary>Tokens of the cached segment.</summary>
    public int Rows => keys[0].Dim(0);

    /// <summary>Layer <paramref name="layer"/>'s keys before RoPE.</summary>
    public Tensor Keys(int layer) => keys[layer];

    public Tensor Values(int layer) => values[layer];

    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}

/// <summary>
/// Transformer-XL (Dai et al. 2019) trained on a frozen base: the stream is cut into segments of l tokens; each layer
/// of a segment attends to [stop-gradient(the previous segment's keys and values at that layer) ; the segment], with
/// RoPE positions continuing from the cached segment (0 .. P-1) into the current one (P .. P+T-1), under the base's
/// causal mask. The cached keys and values are those computed when the previous segment was read (over its own
/// predecessor), so layer L reaches about L segments back. The base is adapted by LoRA on q and v (<see cref="Lora"/>);
/// the cache carries no gradient. <see cref="TransformerXlSession"/> reads a stream the same way at inference.
/// </summary>
public sealed class TransformerXlModel : IDisposable
{
    public TransformerXlModel(LlamaModel baseModel, TransformerXlConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(baseModel.Config);
        Base = baseModel;
        Config = config;
        Lora = new QvLora(baseModel, config.Rank, (float)config.Alpha, new Random(seed));
    }

    public LlamaModel Base { get; }
    public TransformerXlConfig Config { get; }

    /// <summary>LoRA on every layer's q and v: everything Transformer-XL trains.</summary>
    public QvLora Lora { get; }

    /// <summary>
    /// One segment of 1..l tokens after <paramref name="previous"/> (null for the first): returns the final-normed
    /// states [T, dim] and fills <paramref name="kv"/> with the segment's per-layer keys and values (for
    /// <see cref="TransformerXlCache.Capture"/>). No gradient reaches <paramref name="previous"/>.
    /// </summary>
    public Var Segment(Tape tape, ReadOnlySpan<int> tokens, TransformerXlCache? previous, out LayerKv[] kv)
    {
        ArgumentNullException.ThrowIfNull(tape);
        int t = tokens.Length, p = previous?.Rows ?? 0;
        if (t < 1 || t > Config.SegmentLength)
            throw new ArgumentException($"TransformerXlModel.Segment: {t} tokens; a segment holds 1 to {Config.SegmentLength}", nameof(tokens));
        var c = Base.Config;
        var cachedPositions = new int[p];
        for (int i = 0; i < p; i++) cachedPositions[i] = i;
        var positions = new int[t];
        for (int i = 0; i < t; i++) positions[i] = p + i;
        var x = Base.Embed(tape, tokens);
        kv = new LayerKv[c.Layers];
        for (int layer = 0; layer < c.Layers; layer++)
        {
            KvPrefix? front = previous is null ? null
                : new KvPrefix(tape.Rope(Var.Constant(previous.Keys(layer)), cachedPositions, Base.Rope), Var.Constant(previous.Values(layer)));
            x = Lora.Block(tape, layer, x, positions, front, c.DecoderMask(layer), out kv[layer]);
        }
        return Base.FinalNorm.Forward(tape, x);
    }

    public void Dispose() => Lora.Dispose();
}
