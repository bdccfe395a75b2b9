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
    /// <summary>True when the output head reuses the token embedding (tie_word_embeddings).</summary>
    public bool TiedEmbeddings { get; init; }
    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;

    /// <summary>The shape of llama2.c's stories15M (dim 288, 6 layers, 6 heads, vocabulary 32000, context 256, tied head).</summary>
    public static LlamaConfig Stories15MShape => new()
    {
        Dim = 288, HiddenDim = 768, Layers = 6, Heads = 6, KvHeads = 6, VocabSize = 32000, MaxSeqLen = 256, TiedEmbeddings = true,
    };

    /// <summary>Width of one attention head.</summary>
    public int HeadDim => Dim / Heads;
    /// <summary>Query heads per key/value head.</summary>
    public int GroupSize => Heads / KvHeads;
    /// <summary>Rows of W_k and W_v: KvHeads * HeadDim.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first field that is not consistent.</summary>
    public void Validate(string source = "config")
    {
        void Require(bool ok, string what)
        {
            if (!ok) throw new ArgumentException($"{source}: {what} (config {this})");
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
        Require(RopeTheta > 0 && float.IsFinite(RopeTheta), $"rope_theta must be positive, got {RopeTheta}");
    }

    /// <summary>Parameters of the model (frozen weights), counting a tied head once.</summary>
    public long ParameterCount
    {
        get
        {
            long perLayer = 2L * Dim + (long)Dim * Dim * 2 + 2L * KvDim * Dim + 3L * Dim * HiddenDim;
            long head = TiedEmbeddings ? 0 : (long)VocabSize * Dim;
            return (long)VocabSize * Dim + Layers * perLayer + Dim + head;
        }
    }
}
