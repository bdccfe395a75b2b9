using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Uio;

/// <summary>The four adapters UIO adds to one layer: encoder LoRA on W_Q and W_V, transfer LoRA on W_K and W_V.</summary>
public sealed class UioLayerAdapters(Lora encoderQ, Lora encoderV, Lora transferK, Lora transferV)
{
    public Lora EncoderQ { get; } = encoderQ;
    public Lora EncoderV { get; } = encoderV;
    public Lora TransferK { get; } = transferK;
    public Lora TransferV { get; } = transferV;

    public IEnumerable<(string Name, Lora Lora)> All()
    {
        yield return ("encoder.q_proj", EncoderQ);
        yield return ("encoder.v_proj", EncoderV);
        yield return ("transfer.k_proj", TransferK);
        yield return ("transfer.v_proj", TransferV);
    }
}

/// <summary>
/// UIO-LLMs over a frozen Llama-family model (UIO.md section 1). The same frozen weights play three roles:
/// the encoder (plus LoRA on W_Q, W_V) compresses a segment of l tokens with n appended memory tokens into
/// per-layer memory states; the transfer head (plus a separate LoRA on W_K, W_V) turns those states into
/// keys and values; the decoder (the base model unchanged) attends to [all memories ; its own tokens] with
/// RoPE counted from 0 over that combined sequence.
/// </summary>
public sealed class UioModel : IDisposable
{
    private readonly UioLayerAdapters[] layers;
    private readonly EncoderProjections encoderProjections;

    public UioModel(LlamaModel baseModel, UioConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(baseModel.Config);
        if (baseModel.IsTrainable)
            throw new ArgumentException("UioModel: the base model was built with trainable weights; the UIO decoder must be frozen (build it with trainable: false)", nameof(baseModel));
        if (baseModel.TrainableParameters().Any())
            throw new ArgumentException("UioModel: the base model has LoRA adapters attached; the UIO decoder must be the frozen base model (detach them first)", nameof(baseModel));
        Base = baseModel;
        Config = config;
        var c = baseModel.Config;
        var acc = baseModel.Accelerator;

        // One shared learned <mem> embedding, initialised from the embedding of </s>.
        var init = baseModel.Weights.TokenEmbedding.Row(c.EosId).ToArray();
        MemoryEmbedding = Var.Leaf(acc.FromArray(init, [1, c.Dim], "uio.memory_embedding"), requiresGrad: true);

        var rng = new Random(seed);
        layers = new UioLayerAdapters[c.Layers];
        for (int l = 0; l < layers.Length; l++)
        {
            // In-memory names are the adapter file's names (UioAdapter.LoraTensorName).
            string p = $"base_model.model.model.layers.{l}.self_attn.";
            layers[l] = new UioLayerAdapters(
                new Lora(acc, c.Dim, c.Heads * c.HeadDim, config.EncoderRank, config.EncoderAlpha, rng, p + "q_proj.encoder"),
                new Lora(acc, c.Dim, c.KvDim, config.EncoderRank, config.EncoderAlpha, rng, p + "v_proj.encoder"),
                new Lora(acc, c.Dim, c.KvDim, config.TransferRank, config.TransferAlpha, rng, p + "k_proj.transfer"),
                new Lora(acc, c.Dim, c.KvDim, config.TransferRank, config.TransferAlpha, rng, p + "v_proj.transfer"));
        }
        encoderProjections = new EncoderProjections(layers);
    }

    public LlamaModel Base { get; }
    public UioConfig Config { get; }
    public Accelerator Accelerator => Base.Accelerator;
    /// <summary>[1, d]: the one embedding every memory token starts from.</summary>
    public Var MemoryEmbedding { get; }
    public IReadOnlyList<UioLayerAdapters> Layers => layers;

    /// <summary>Encoder LoRA, transfer LoRA and the memory embedding: everything UIO trains.</summary>
    public IEnumerable<Var> TrainableParameters() => EncoderParameters().Concat(TransferParameters());

    /// <summary>The parameters reached only through memories: encoder LoRA and the memory embedding.</summary>
    public IEnumerable<Var> EncoderParameters()
    {
        yield return MemoryEmbedding;
        foreach (var layer in layers)
        {
            foreach (var p in layer.EncoderQ.Parameters()) yield return p;
            foreach (var p in layer.EncoderV.Parameters()) yield return p;
        }
    }

    /// <summary>The transfer-head LoRA (its gradients come straight from each decoder loss).</summary>
    public IEnumerable<Var> TransferParameters()
    {
        if (!Config.TransferHead) yield break;   // ablation: memories go through the frozen W_K, W_V
        foreach (var layer in layers)
        {
            foreach (var p in layer.TransferK.Parameters()) yield return p;
            foreach (var p in layer.TransferV.Parameters()) yield return p;
        }
    }

    // ------------------------------------------------------------------ encoder

    /// <summary>RoPE positions of the encoder input: ordinary token j at j, memory token i at (i+1) * l/n.</summary>
    public int[] EncoderPositions()
    {
        int l = Config.SegmentLength, n = Config.MemoryTokens, c = Config.Stride;
        var positions = new int[l + n];
        for (int j = 0; j < l; j++) positions[j] = j;
        for (int i = 0; i < n; i++) positions[l + i] = (i + 1) * c;
        return positions;
    }

    /// <summary>
    /// The encoder's mask over [segment ; memory]: ordinary tokens causal among themselves; memory token i
    /// sees ordinary tokens 0 .. (i+1) * l/n - 1 and itself.
    /// </summary>
    public AttentionMask EncoderMask => AttentionMask.StepExpansion(Config.MemoryTokens, Config.Stride);

    /// <summary>
    /// The encoder's mask at one layer: <see cref="EncoderMask"/>, with the base's sliding window for the ordinary
    /// tokens when the base layer is local (<see cref="LlamaConfig.LocalLayers"/>); memory tokens always read their
    /// whole span.
    /// </summary>
    public AttentionMask EncoderMaskAt(int layer) => Base.Config.IsLocal(layer)
        ? AttentionMask.StepExpansion(Config.MemoryTokens, Config.Stride, window: Base.Config.LocalWindow)
        : EncoderMask;

    /// <summary>
    /// Compresses whole segments (tokens.Length a multiple of l) in one batched pass: each segment is
    /// encoded alone as [segment ; &lt;mem&gt; x n], so segments are independent and the result equals
    /// compressing them one by one.
    /// </summary>
    public Memory Compress(Tape tape, ReadOnlySpan<int> tokens) => Encode(tape, tokens, rawTokens: false);

    /// <summary>
    /// A diagnostic memory without compression: the encoder's per-layer attention inputs at the segments'
    /// ORDINARY token positions (l rows per segment, positions 0 .. l-1), instead of at the memory tokens. With
    /// every LoRA B = 0 these are exactly the base model's own per-layer states of each segment read alone, so a
    /// decoder given them as the memory of the previous segment computes the base model's full attention over
    /// [previous ; current] (MEMORY.md, diagnostic 1). Use it with <see cref="Decode"/>, <see cref="DecoderLoss"/>
    /// or <see cref="UioSession.AppendMemory"/>.
    /// </summary>
    public Memory RawTokenMemory(Tape tape, ReadOnlySpan<int> tokens) => Encode(tape, tokens, rawTokens: true);

    private Memory Encode(Tape tape, ReadOnlySpan<int> tokens, bool rawTokens)
    {
        ArgumentNullException.ThrowIfNull(tape);
        int l = Config.SegmentLength, n = Config.MemoryTokens, width = l + n;
        if (tokens.IsEmpty || tokens.Length % l != 0)
            throw new ArgumentException($"UioModel.{(rawTokens ? nameof(RawTokenMemory) : nameof(Compress))}: {tokens.Length} tokens is not a whole number of segments of {l}", nameof(tokens));
        int segments = tokens.Length / l;
        var c = Base.Config;

        // x = [emb(segment b) ; mem x n] for every segment b, stacked: [segments * (l + n), d].
        var embedded = Base.Embed(tape, tokens);
        var memoryRows = tape.Embedding(MemoryEmbedding, new int[n]);
        var parts = new List<Var>(2 * segments);
        for (int b = 0; b < segments; b++)
        {
            parts.Add(tape.SliceRows(embedded, b * l, l));
            parts.Add(memoryRows);
        }
        var x = tape.ConcatRows(parts);

        int[] positions = EncoderPositions();
        // The rows gathered at every layer: the memory tokens, or (raw) the ordinary tokens.
        int rows = rawTokens ? l : n;
        var memoryIndex = new int[segments * rows];
        for (int b = 0; b < segments; b++)
            for (int i = 0; i < rows; i++) memoryIndex[b * rows + i] = b * width + (rawTokens ? 0 : l) + i;
        // Every layer of the encoder uses the step-expansion mask. In a local base layer the ordinary tokens keep
        // the base's sliding window (so their states are the base's own), while memory token i still reads its
        // whole span of the segment: the layer-(L+1) memory state -- the output of encoder layer L at the memory
        // positions -- can carry content such as a passkey even when the base's layer L is local.
        // The segments run as one batch through the base's own blocks, with the encoder LoRA on W_Q and W_V
        // (EncoderProjections); h_mem at each layer is the block's attention input at the memory positions (a gather).
        var states = new Var[c.Layers];
        for (int layer = 0; layer < c.Layers - 1; layer++)
        {
            int current = layer;
            x = Base.Blocks[layer].ForwardBatch(tape, x, segments, positions, EncoderMaskAt(layer), encoderProjections,
                attentionInput: normed => states[current] = tape.Embedding(normed, memoryIndex));
        }
        // The last layer's attention and MLP feed nothing we keep: only its attention input is read.
        int last = c.Layers - 1;
        states[last] = tape.Embedding(Base.Blocks[last].AttentionNorm.Forward(tape, x), memoryIndex);
        return new Memory(states, segments, rows);
    }

    // ------------------------------------------------------------------ transfer head

    /// <summary>
    /// Layer <paramref name="layer"/>'s memory keys and values: K = h (W_K + dW_K), V = h (W_V + dW_V) for
    /// states h [M, d]; K rotated at positions firstPosition .. firstPosition + M - 1.
    /// </summary>
    public KvPrefix TransferKv(Tape tape, Var states, int layer, int firstPosition = 0)
    {
        var (k, v) = TransferKvUnrotated(tape, states, layer);
        int m = k.Value.Dim(0);
        var positions = new int[m];
        for (int i = 0; i < m; i++) positions[i] = firstPosition + i;
        return new KvPrefix(tape.Rope(k, positions, Base.Rope), v);
    }

    /// <summary>The transfer head's keys and values [M, kv_heads, head_dim] before any rotation.</summary>
    public KvPrefix TransferKvUnrotated(Tape tape, Var states, int layer)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(states);
        var c = Base.Config;
        var attention = Base.Blocks[layer].Attention;
        var adapters = layers[layer];
        int m = states.Value.Dim(0);
        var k = Config.TransferHead
            ? tape.Lora(states, attention.K.Weight, adapters.TransferK.A, adapters.TransferK.B, adapters.TransferK.Scale)
            : tape.Linear(states, attention.K.Weight);
        var v = Config.TransferHead
            ? tape.Lora(states, attention.V.Weight, adapters.TransferV.A, adapters.TransferV.B, adapters.TransferV.Scale)
            : tape.Linear(states, attention.V.Weight);
        return new KvPrefix(tape.Reshape(k, m, c.KvHeads, c.HeadDim), tape.Reshape(v, m, c.KvHeads, c.HeadDim));
    }

    // ------------------------------------------------------------------ decoder

    /// <summary>The positions the decoder may read: <see cref="UioConfig.ContextBudget"/> of the base's context.</summary>
    public int ContextBudget => Config.ContextBudget(Base.Config.MaxSeqLen);

    /// <summary>
    /// Throws <see cref="PositionBudgetException"/> when a decoder step over <paramref name="memoryRows"/> memory
    /// rows and <paramref name="localTokens"/> local tokens (new ones included) would read positions past the
    /// budget, unless <see cref="UioConfig.AllowExtrapolation"/> is set.
    /// </summary>
    public void CheckPositionBudget(int memoryRows, int localTokens)
    {
        if (!Config.AllowExtrapolation && memoryRows + localTokens > ContextBudget)
            throw PositionBudgetException.For(Config, Base.Config.MaxSeqLen, memoryRows, localTokens);
    }

    /// <summary>
    /// Decoder logits [T, vocab] for tokens that follow the given memories (oldest first) and whatever the
    /// local cache holds: per layer keys/values [memory ; local ; new], RoPE over that sequence from 0.
    /// </summary>
    public Var Decode(Tape tape, ReadOnlySpan<int> tokens, IReadOnlyList<Memory> memories, KvCache? local = null)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(memories);
        return Base.Head.Forward(tape, DecoderHidden(tape, tokens, memories, local));
    }

    /// <summary>The decoder's final hidden states [T, dim] (before the head) for one segment given the memories before it.</summary>
    private Var DecoderHidden(Tape tape, ReadOnlySpan<int> tokens, IReadOnlyList<Memory> memories, KvCache? local)
    {
        int memoryTokens = memories.Sum(m => m.Tokens);
        var positions = new int[tokens.Length];
        int start = memoryTokens + (local?.Length ?? 0);
        CheckPositionBudget(memoryTokens, start - memoryTokens + tokens.Length);
        for (int t = 0; t < positions.Length; t++) positions[t] = start + t;

        KvPrefix? Prefix(int layer)
        {
            if (memoryTokens == 0) return null;
            var states = tape.ConcatRows(memories.Select(m => m.States[layer]).ToArray());
            return TransferKv(tape, states, layer);
        }
        return Base.Hidden(tape, Base.Embed(tape, tokens), positions, local, Prefix);
    }

    /// <summary>Mean next-token cross-entropy of the decoder on one segment given the memories before it.</summary>
    public Var DecoderLoss(Tape tape, ReadOnlySpan<int> tokens, ReadOnlySpan<int> targets, IReadOnlyList<Memory> memories)
    {
        if (targets.Length != tokens.Length)
            throw new ArgumentException($"UioModel.DecoderLoss: {targets.Length} targets for {tokens.Length} tokens", nameof(targets));
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(memories);
        return Base.Head.CrossEntropy(tape, DecoderHidden(tape, tokens, memories, null), targets);
    }

    public void Dispose()
    {
        MemoryEmbedding.DisposeLeaf();
        MemoryEmbedding.Value.Dispose();
        foreach (var layer in layers)
            foreach (var (_, lora) in layer.All()) lora.Dispose();
    }

    /// <summary>The encoder's W_Q and W_V of every layer: the base's projection plus that layer's encoder LoRA; W_K and W_O the base's.</summary>
    private sealed class EncoderProjections(UioLayerAdapters[] layers) : IProjectionAdapters
    {
        public Var? Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input) => which switch
        {
            AttentionProjection.Query => baseProjection.Forward(tape, input, layers[layer].EncoderQ),
            AttentionProjection.Value => baseProjection.Forward(tape, input, layers[layer].EncoderV),
            _ => null,
        };
    }
}
