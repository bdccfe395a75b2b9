using System.Globalization;
using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// The settings of a kNN-memory model. <paramref name="Gated"/>: Memorizing Transformers (a learned per-head gate
/// mixes the memory and local arms) or the Focused Transformer (one softmax over memory and local keys).
/// <paramref name="Negatives"/>: Focused Transformer crossbatch, distractor segments put into the memory during
/// training (0: none). <paramref name="GateInit"/>: the initial gate bias b (g = sigmoid(b)). <paramref name="MemoryRows"/>:
/// most rows the kNN memory keeps, oldest dropped first (0: unlimited).
/// </summary>
public sealed record MemorizingConfig(int SegmentLength, int Layer, int TopK, int Rank, double Alpha, bool Gated, int Negatives = 0, double GateInit = -2, int MemoryRows = 0)
{
    /// <summary>The method's name in messages.</summary>
    public string Method => Gated ? "memorizing" : "focused-transformer";

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that does not fit <paramref name="baseConfig"/>.</summary>
    public void Validate(LlamaConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        if (SegmentLength < 1 || SegmentLength > baseConfig.MaxSeqLen)
            throw new ArgumentException($"{Method}: segment must be 1 to the base's window {baseConfig.MaxSeqLen}, got {SegmentLength}");
        if (Layer < 0 || Layer >= baseConfig.Layers) throw new ArgumentException($"{Method}: layer must be 0 to {baseConfig.Layers - 1}, got {Layer}");
        if (baseConfig.IsLocal(Layer) && SegmentLength > baseConfig.LocalWindow)
            throw new ArgumentException($"{Method}: layer {Layer} is a sliding-window layer of {baseConfig.LocalWindow} tokens, shorter than segment {SegmentLength}");
        if (TopK < 0) throw new ArgumentException($"{Method}: topk must be at least 0, got {TopK}");
        if (Rank < 1) throw new ArgumentException($"{Method}: rank must be at least 1, got {Rank}");
        if (!(Alpha > 0) || !double.IsFinite(Alpha)) throw new ArgumentException($"{Method}: alpha must be positive, got {Alpha.ToString("R", CultureInfo.InvariantCulture)}");
        if (MemoryRows < 0) throw new ArgumentException($"{Method}: memory must be at least 0 rows (0: unlimited), got {MemoryRows}");
        if (Negatives < 0) throw new ArgumentException($"{Method}: negatives must be at least 0, got {Negatives}");
        if (!double.IsFinite(GateInit)) throw new ArgumentException($"{Method}: the gate bias must be finite");
    }
}

/// <summary>
/// Memorizing Transformers (Wu et al. 2022) and the Focused Transformer (Tworkowski et al. 2023) on a frozen base:
/// the stream is read in segments of l tokens, each attending causally within itself (positions 0..T-1); at one
/// layer (<see cref="MemorizingConfig.Layer"/>) every query also reads the top-k (key, value) pairs of all earlier
/// segments from a non-differentiable <see cref="KnnMemory"/> (keys un-rotated, <see cref="MemoryAttention"/>).
/// Trained: LoRA on q and v of every layer and, when gated, the per-head gate bias. After a segment is read, its
/// memory-layer keys (before RoPE) and values are appended to the memory.
/// </summary>
public sealed class MemorizingModel : IDisposable
{
    public MemorizingModel(LlamaModel baseModel, MemorizingConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(baseModel.Config);
        Base = baseModel;
        Config = config;
        Lora = new QvLora(baseModel, config.Rank, (float)config.Alpha, new Random(seed));
        if (config.Gated)
        {
            var bias = Enumerable.Repeat((float)config.GateInit, baseModel.Config.Heads).ToArray();
            GateBias = Var.Leaf(baseModel.Accelerator.FromArray(bias, [baseModel.Config.Heads], "memorizing.gate_bias"), requiresGrad: true, "memorizing.gate_bias");
        }
    }

    public LlamaModel Base { get; }
    public MemorizingConfig Config { get; }

    /// <summary>LoRA on every layer's q and v.</summary>
    public QvLora Lora { get; }

    /// <summary>The per-head gate bias [heads] (gated models only).</summary>
    public Var? GateBias { get; }

    /// <summary>Every trainable tensor with its name: the LoRA, then the gate bias.</summary>
    public IEnumerable<(string Name, Var Parameter)> NamedParameters()
    {
        foreach (var p in Lora.NamedParameters()) yield return p;
        if (GateBias is not null) yield return ("memorizing.gate_bias", GateBias);
    }

    /// <summary>An empty memory of this model's shape and capacity.</summary>
    public KnnMemory NewMemory() => new(Base.Config.KvHeads, Base.Config.HeadDim, Config.MemoryRows);

    /// <summary>
    /// One segment of 1..l tokens reading <paramref name="memory"/> (not changed): returns the final-normed states
    /// [T, dim] and the segment's memory-layer keys before RoPE and values (<see cref="KnnMemory.Add(Tensor, Tensor)"/>
    /// them after the segment), and which memory rows each query retrieved.
    /// </summary>
    public Var Segment(Tape tape, ReadOnlySpan<int> tokens, KnnMemory memory, out LayerKv memoryLayer, out MemoryAttention.Retrieval retrieval)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(memory);
        int t = tokens.Length;
        if (t < 1 || t > Config.SegmentLength)
            throw new ArgumentException($"{Config.Method}: a segment holds 1 to {Config.SegmentLength} tokens, got {t}", nameof(tokens));
        var c = Base.Config;
        var positions = new int[t];
        for (int i = 0; i < t; i++) positions[i] = i;
        var x = Base.Embed(tape, tokens);
        memoryLayer = default;
        retrieval = new MemoryAttention.Retrieval([]);
        for (int layer = 0; layer < c.Layers; layer++)
        {
            if (layer != Config.Layer)
            {
                x = Lora.Block(tape, layer, x, positions, null, c.DecoderMask(layer), out _);
                continue;
            }
            var block = Base.Blocks[layer];
            var attention = block.Attention;
            var normed = block.AttentionNorm.Forward(tape, x);
            var rawQuery = tape.Reshape(Lora.Project(tape, layer, attention.Q, normed), t, c.Heads, c.HeadDim);
            var query = tape.Rope(rawQuery, positions, Base.Rope);
            var rawKeys = tape.Reshape(Lora.Project(tape, layer, attention.K, normed), t, c.KvHeads, c.HeadDim);
            var keys = tape.Rope(rawKeys, positions, Base.Rope);
            var values = tape.Reshape(Lora.Project(tape, layer, attention.V, normed), t, c.KvHeads, c.HeadDim);
            memoryLayer = new LayerKv(rawKeys, keys, values);
            var o = MemoryAttention.Forward(tape, query, rawQuery, keys, values, memory, Config.TopK, GateBias, out retrieval);
            var h = tape.Add(x, attention.O.Forward(tape, tape.Reshape(o, t, c.Heads * c.HeadDim)));
            x = tape.Add(h, block.Mlp.Forward(tape, block.FfnNorm.Forward(tape, h)));
        }
        return Base.FinalNorm.Forward(tape, x);
    }

    /// <summary>
    /// Reads <paramref name="tokens"/> segment by segment without gradients, appending every segment's memory-layer
    /// pairs to <paramref name="memory"/> (how crossbatch distractors and test memories are built).
    /// </summary>
    public void Fill(ReadOnlySpan<int> tokens, KnnMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        for (int start = 0; start < tokens.Length; start += Config.SegmentLength)
        {
            using var tape = new Tape(Base.Accelerator, $"{Config.Method} fill");
            using var noGrad = tape.NoGrad();
            Segment(tape, tokens.Slice(start, Math.Min(Config.SegmentLength, tokens.Length - start)), memory, out var kv, out _);
            memory.Add(kv.RawKeys.Value, kv.Values.Value);
        }
    }

    public void Dispose()
    {
        Lora.Dispose();
        if (GateBias is null) return;
        GateBias.DisposeLeaf();
        GateBias.Value.Dispose();
    }
}
