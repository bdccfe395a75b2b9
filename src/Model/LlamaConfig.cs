using UioLlm.Kernels;

namespace UioLlm.Model;

/// <summary>
/// The shape and constants of a Llama-family decoder, named as in Hugging Face's config.json.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>Model width d (hidden_size).</summary>
    public required int Dim { get; init; }
    /// <summary>SwiGLU inner width (intermediate_size).</summary>
    public required int HiddenDim { get; init; }
    public required int Layers { get; init; }
    /// <summary>Query heads (num_attention_heads).</summary>
    public required int Heads { get; init; }
    /// <summary>Key/value heads (num_key_value_heads); Heads must be a multiple of it.</summary>
    public required int KvHeads { get; init; }
    public required int VocabSize { get; init; }
    /// <summary>The context length the model was trained for (max_position_embeddings).</summary>
    public int MaxSeqLen { get; init; } = 2048;
    public float NormEps { get; init; } = 1e-5f;
    public float RopeTheta { get; init; } = 10000f;
    /// <summary>Context extension applied to RoPE; null for plain RoPE.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>
    /// True when the q, k and v projections carry a bias (Qwen2 / Qwen2.5; Hugging Face's attention_bias, which
    /// for Llama also puts one on o_proj: that form is refused by the config reader).
    /// </summary>
    public bool AttentionBias { get; init; }
    /// <summary>True when the output head reuses the token embedding (tie_word_embeddings).</summary>
    public bool TiedEmbeddings { get; init; }
    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;
    /// <summary>
    /// Local attention (off by default): the first <see cref="LocalLayers"/> decoder layers attend only to the
    /// last <see cref="LocalWindow"/> tokens (causal sliding window, like Mistral's or Gemma's local layers); the
    /// other layers stay global. Keys placed before a layer's own tokens (UIO memory, a cache prefix) stay
    /// visible to every query. 0 for both: every layer is global, exactly as without the setting.
    /// </summary>
    public int LocalWindow { get; init; }
    /// <summary>How many leading layers are local (see <see cref="LocalWindow"/>); 0: none; all of them: Mistral's sliding_window.</summary>
    public int LocalLayers { get; init; }

    /// <summary>The shape of llama2.c's stories15M (dim 288, 6 layers, 6 heads, vocabulary 32000, context 256, tied head).</summary>
    public static LlamaConfig Stories15MShape => new()
    {
        Dim = 288, HiddenDim = 768, Layers = 6, Heads = 6, KvHeads = 6, VocabSize = 32000, MaxSeqLen = 256, TiedEmbeddings = true,
    };

    /// <summary>Width of one attention head.</summary>
    public int HeadDim => Heads > 0 ? Dim / Heads : 0;
    /// <summary>Query heads per key/value head (0 while <see cref="KvHeads"/> is not positive; <see cref="Validate"/> refuses that).</summary>
    public int GroupSize => KvHeads > 0 ? Heads / KvHeads : 0;
    /// <summary>Rows of W_k and W_v: KvHeads * HeadDim.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>True when layer <paramref name="layer"/> uses the sliding window of <see cref="LocalWindow"/> tokens.</summary>
    public bool IsLocal(int layer) => layer < LocalLayers;

    /// <summary>
    /// The decoder self-attention mask of layer <paramref name="layer"/> over [<paramref name="prefixLength"/> prefix
    /// keys ; own tokens] (the prefix: UIO memory or a cache prefix, at positions 0 .. P-1 before the own tokens).
    /// A global layer is causal and sees the whole prefix. A local layer's sliding window of <see cref="LocalWindow"/>
    /// counts positions over the whole sequence, prefix included: it sees a prefix row only when that row is
    /// fewer than LocalWindow positions back, exactly as it would see a token there (for a Mistral-style window
    /// longer than the context, everything; for a window of a few tokens, at most the last few memory rows).
    /// </summary>
    public AttentionMask DecoderMask(int layer, int prefixLength = 0) => IsLocal(layer)
        ? AttentionMask.SlidingWindow(LocalWindow, sinks: 0, prefixLength: 0)
        : AttentionMask.CausalMask(prefixLength: prefixLength);

    /// <summary>
    /// Throws <see cref="NotSupportedException"/> when the config has local layers: for writers of formats that
    /// cannot express them (llama2.c, Hugging Face's Llama config.json), which must not drop them silently.
    /// </summary>
    public void RequireGlobalAttention(string format)
    {
        if (LocalLayers > 0)
            throw new NotSupportedException(
                $"{format} cannot express local attention (LocalLayers = {LocalLayers}, LocalWindow = {LocalWindow}); " +
                "saving it would silently turn the local layers global. Keep such a model in memory, or set LocalLayers = 0.");
    }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first field that is not consistent.</summary>
    public void Validate(string source = "config")
    {
        void Require(bool ok, string what)
        {
            if (!ok) throw new ArgumentException($"{source}: {what} ({Summary})");
        }
        Require(Dim > 0, $"dim must be positive, got {Dim}");
        Require(HiddenDim > 0, $"hidden_dim must be positive, got {HiddenDim}");
        Require(Layers > 0, $"layers must be positive, got {Layers}");
        Require(Heads > 0, $"heads must be positive, got {Heads}");
        Require(KvHeads > 0 && Heads % KvHeads == 0, $"heads ({Heads}) must be a positive multiple of kv_heads ({KvHeads})");
        Require(Dim % Heads == 0, $"dim ({Dim}) must be divisible by heads ({Heads})");
        Require(HeadDim % 2 == 0, $"head_dim ({HeadDim}) must be even for RoPE");
        Require(VocabSize > 0, $"vocab_size must be positive, got {VocabSize}");
        Require(MaxSeqLen > 0, $"max_seq_len must be positive, got {MaxSeqLen}");
        Require(NormEps > 0 && float.IsFinite(NormEps), $"rms_norm_eps must be positive, got {NormEps}");
        Require(RopeTheta > 1 && float.IsFinite(RopeTheta), $"rope_theta must be a finite number greater than 1, got {RopeTheta}");
        Require(LocalLayers >= 0 && LocalLayers <= Layers, $"LocalLayers ({LocalLayers}) must lie in [0, layers ({Layers})] (all layers local: Mistral's sliding window)");
        Require(LocalWindow >= 0, $"LocalWindow must be >= 0, got {LocalWindow}");
        Require(LocalLayers == 0 || LocalWindow > 0, $"LocalLayers = {LocalLayers} needs a positive LocalWindow, got {LocalWindow}");
        Require(LocalLayers > 0 || LocalWindow == 0, $"LocalWindow = {LocalWindow} has no effect with LocalLayers = 0; set both or neither");
    }

    /// <summary>The raw fields, for messages (no derived value, so it never divides by a zero field).</summary>
    private string Summary => FormattableString.Invariant(
        $"config: dim {Dim}, hidden_dim {HiddenDim}, layers {Layers}, heads {Heads}, kv_heads {KvHeads}, vocab_size {VocabSize}, max_seq_len {MaxSeqLen}, rope_theta {RopeTheta}");

    /// <summary>Parameters of the model (frozen weights), counting a tied head once.</summary>
    public long ParameterCount
    {
        get
        {
            long perLayer = 2L * Dim + (long)Dim * Dim * 2 + 2L * KvDim * Dim + 3L * Dim * HiddenDim + (AttentionBias ? Dim + 2L * KvDim : 0);
            long head = TiedEmbeddings ? 0 : (long)VocabSize * Dim;
            return (long)VocabSize * Dim + Layers * perLayer + Dim + head;
        }
    }
}
