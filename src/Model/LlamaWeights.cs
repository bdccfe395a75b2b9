using UioLlm.Kernels;
using UioLlm.Kernels.Quantization;

namespace UioLlm.Model;

/// <summary>The frozen weights of one decoder layer, in Hugging Face layout ([out, in]; Q/K rows in rotate-half order).</summary>
public sealed class LlamaLayerWeights
{
    public required Tensor AttentionNorm { get; init; }   // [dim]              input_layernorm
    public required Tensor Wq { get; init; }              // [heads*hd, dim]    self_attn.q_proj
    public required Tensor Wk { get; init; }              // [kv_heads*hd, dim] self_attn.k_proj
    public required Tensor Wv { get; init; }              // [kv_heads*hd, dim] self_attn.v_proj
    public required Tensor Wo { get; init; }              // [dim, heads*hd]    self_attn.o_proj
    public Tensor? Bq { get; init; }                      // [heads*hd]         self_attn.q_proj.bias (LlamaConfig.AttentionBias)
    public Tensor? Bk { get; init; }                      // [kv_heads*hd]      self_attn.k_proj.bias
    public Tensor? Bv { get; init; }                      // [kv_heads*hd]      self_attn.v_proj.bias
    public required Tensor FfnNorm { get; init; }         // [dim]              post_attention_layernorm
    public required Tensor W1 { get; init; }              // [hidden, dim]      mlp.gate_proj
    public required Tensor W2 { get; init; }              // [dim, hidden]      mlp.down_proj
    public required Tensor W3 { get; init; }              // [hidden, dim]      mlp.up_proj
}

/// <summary>
/// Every weight of a Llama-family model, the single target of all loaders (llama2.c, GGUF, Hugging Face
/// safetensors). Layout is Hugging Face's: linear weights [out, in]; Q and K rows ordered for rotate-half
/// RoPE (<see cref="RopeLayout.HalfSplit"/>), so checkpoints in Meta's interleaved order are permuted on load.
/// </summary>
public sealed class LlamaWeights : IDisposable
{
    private readonly Tensor storage;
    private readonly bool ownsStorage;

    private LlamaWeights(Accelerator accelerator, LlamaConfig config, Tensor storage, Tensor embedding, LlamaLayerWeights[] layers,
        Tensor finalNorm, Tensor output, bool ownsStorage = true)
    {
        this.storage = storage;
        this.ownsStorage = ownsStorage;
        Accelerator = accelerator;
        Config = config;
        TokenEmbedding = embedding;
        Layers = layers;
        FinalNorm = finalNorm;
        Output = output;
    }

    public Accelerator Accelerator { get; }
    public LlamaConfig Config { get; }
    /// <summary>[vocab, dim] model.embed_tokens.weight.</summary>
    public Tensor TokenEmbedding { get; }
    public IReadOnlyList<LlamaLayerWeights> Layers { get; }
    /// <summary>[dim] model.norm.weight.</summary>
    public Tensor FinalNorm { get; }
    /// <summary>[vocab, dim] lm_head.weight; the same tensor as <see cref="TokenEmbedding"/> when tied.</summary>
    public Tensor Output { get; }

    /// <summary>
    /// Allocates zero-filled weights of the given shape on <paramref name="accelerator"/>, as views into one
    /// contiguous block laid out in the order a forward pass reads them (decoding streams it front to back).
    /// </summary>
    public static LlamaWeights Allocate(Accelerator accelerator, LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        int d = config.Dim, kv = config.KvDim, h = config.HiddenDim;
        long total = config.ParameterCount;
        if (total > int.MaxValue)
            throw new ArgumentException($"LlamaWeights: {total} parameters exceed one tensor's limit of {int.MaxValue} elements", nameof(config));
        var storage = accelerator.Allocate([(int)total], "llama.weights");
        int next = 0;
        Tensor T(string name, params int[] shape)
        {
            int count = 1;
            foreach (int n in shape) count *= n;
            var view = storage.Slice(next, count).View(shape).Named(name);
            next += count;
            return view;
        }
        var embedding = T("model.embed_tokens.weight", config.VocabSize, d);
        var layers = new LlamaLayerWeights[config.Layers];
        for (int l = 0; l < layers.Length; l++)
        {
            string p = $"model.layers.{l}.";
            bool bias = config.AttentionBias;
            layers[l] = new LlamaLayerWeights
            {
                AttentionNorm = T(p + "input_layernorm.weight", d),
                Wq = T(p + "self_attn.q_proj.weight", d, d),
                Bq = bias ? T(p + "self_attn.q_proj.bias", d) : null,
                Wk = T(p + "self_attn.k_proj.weight", kv, d),
                Bk = bias ? T(p + "self_attn.k_proj.bias", kv) : null,
                Wv = T(p + "self_attn.v_proj.weight", kv, d),
                Bv = bias ? T(p + "self_attn.v_proj.bias", kv) : null,
                Wo = T(p + "self_attn.o_proj.weight", d, d),
                FfnNorm = T(p + "post_attention_layernorm.weight", d),
                W1 = T(p + "mlp.gate_proj.weight", h, d),
                W3 = T(p + "mlp.up_proj.weight", h, d),
                W2 = T(p + "mlp.down_proj.weight", d, h),
            };
        }
        var norm = T("model.norm.weight", d);
        var output = config.TiedEmbeddings ? embedding : T("lm_head.weight", config.VocabSize, d);
        return new LlamaWeights(accelerator, config, storage, embedding, layers, norm, output);
    }

    /// <summary>
    /// Weights of the given shape drawn at random (seeded): linear and embedding weights uniform in
    /// +-<paramref name="scale"/>, norm gains 1. For benchmarks and for pre-training a model from scratch.
    /// </summary>
    public static LlamaWeights Random(Accelerator accelerator, LlamaConfig config, int seed, float scale = 0.02f)
    {
        var weights = Allocate(accelerator, config);
        var rng = new System.Random(seed);
        foreach (var (name, t) in weights.Named())
        {
            var values = new float[t.Length];
            bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
            for (int i = 0; i < values.Length; i++) values[i] = norm ? 1f : (float)(rng.NextDouble() * 2 - 1) * scale;
            t.CopyFrom(values);
        }
        return weights;
    }

    /// <summary>
    /// Every distinct tensor with its Hugging Face name, in checkpoint order (a tied head is listed once,
    /// as the embedding).
    /// </summary>
    /// <summary>
    /// Throws a <see cref="ModelFormatException"/> naming <paramref name="source"/>, the first tensor holding a NaN
    /// or an infinity, and the index of the first such value; loaders call it after reading every weight.
    /// </summary>
    public void RequireFinite(string source)
    {
        foreach (var (name, tensor) in Named())
        {
            int bad = NonFinite.FirstIndex(tensor);
            if (bad < 0) continue;
            float value = tensor.Memory.IsHostAccessible ? tensor.Span[bad] : tensor.ToArray()[bad];
            throw new ModelFormatException(source,
                $"tensor '{name}' holds a non-finite weight: {NonFinite.Describe(value)} at index {NonFinite.Coordinates(tensor.Shape, bad)} of shape [{string.Join(", ", tensor.Shape.ToArray())}] (the file is damaged, or was saved from a diverged model)");
        }
    }

    public IEnumerable<(string Name, Tensor Tensor)> Named()
    {
        yield return (TokenEmbedding.Name!, TokenEmbedding);
        foreach (var layer in Layers)
        {
            foreach (var t in new[] { layer.AttentionNorm, layer.Wq, layer.Bq, layer.Wk, layer.Bk, layer.Wv, layer.Bv, layer.Wo, layer.FfnNorm, layer.W1, layer.W2, layer.W3 })
                if (t is not null) yield return (t.Name!, t);
        }
        yield return (FinalNorm.Name!, FinalNorm);
        if (!Config.TiedEmbeddings) yield return (Output.Name!, Output);
    }

    /// <summary>The tensor with the given Hugging Face name, or null.</summary>
    public Tensor? Find(string name)
    {
        foreach (var (n, t) in Named())
            if (n == name) return t;
        return null;
    }

    private readonly Dictionary<string, QuantizedMatrix> quantized = new(StringComparer.Ordinal);

    /// <summary>
    /// Block-quantised copies of matrices, by Hugging Face name (a GGUF loaded with keepQuantized): tape-free
    /// decoding on the CPU multiplies by these instead of the float32 tensors, which stay for everything else
    /// (prefill, the tape, saving). Empty unless a loader or <see cref="KeepQuantized"/> filled it.
    /// </summary>
    public IReadOnlyDictionary<string, QuantizedMatrix> Quantized => quantized;

    /// <summary>
    /// Keeps <paramref name="matrix"/> as the quantised form of the matrix called <paramref name="name"/>. The
    /// caller promises it encodes the same weights as the float32 tensor (a loader stores both from one file).
    /// </summary>
    public void KeepQuantized(string name, QuantizedMatrix matrix)
    {
        ArgumentNullException.ThrowIfNull(matrix);
        var t = Find(name) ?? throw new ArgumentException($"LlamaWeights: no tensor '{name}'", nameof(name));
        if (t.Rank != 2 || t.Dim(0) != matrix.Rows || t.Dim(1) != matrix.Columns)
            throw new ArgumentException($"LlamaWeights: quantised '{name}' is [{matrix.Rows}, {matrix.Columns}], the tensor is {t.ShapeString}", nameof(matrix));
        quantized[name] = matrix;
    }

    /// <summary>
    /// Promise that no weight changes from now on (<see cref="Tensor.Freeze"/>): the CPU kernels then keep the
    /// matrices pre-packed for the GEMM. A frozen <see cref="Modules.LlamaModel"/> does this; write into the
    /// weights again only after <see cref="Unfreeze"/>.
    /// </summary>
    public void Freeze()
    {
        foreach (var (_, t) in Named()) t.Freeze();
    }

    /// <summary>
    /// Allow the weights to change again (full-weight training does this); pre-packed copies are dropped, and so are
    /// the quantised copies (<see cref="Quantized"/>), which would no longer match.
    /// </summary>
    public void Unfreeze()
    {
        foreach (var (_, t) in Named()) t.Unfreeze();
        quantized.Clear();
    }

    /// <summary>
    /// The same tensors under another config of the same shape (for example more local layers, another RoPE base):
    /// a view that shares the weights and does not free them; the original must outlive it.
    /// </summary>
    /// <exception cref="ArgumentException">The config describes another shape.</exception>
    public LlamaWeights WithConfig(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var c = Config;
        if (config.Dim != c.Dim || config.HiddenDim != c.HiddenDim || config.Layers != c.Layers || config.Heads != c.Heads || config.KvHeads != c.KvHeads ||
            config.VocabSize != c.VocabSize || config.TiedEmbeddings != c.TiedEmbeddings)
            throw new ArgumentException($"LlamaWeights.WithConfig: the new config has another shape ({config.Dim}x{config.Layers} layers, {config.Heads}/{config.KvHeads} heads, " +
                $"hidden {config.HiddenDim}, vocab {config.VocabSize}) than the weights ({c.Dim}x{c.Layers}, {c.Heads}/{c.KvHeads}, hidden {c.HiddenDim}, vocab {c.VocabSize})", nameof(config));
        return new LlamaWeights(Accelerator, config, storage, TokenEmbedding, Layers.ToArray(), FinalNorm, Output, ownsStorage: false);
    }

    public void Dispose()
    {
        if (ownsStorage) storage.Dispose();
    }
}

/// <summary>Reorders Q/K rows between Meta's interleaved RoPE pairs and Hugging Face's rotate-half halves.</summary>
public static class RopePermutation
{
    /// <summary>
    /// In place, for each head of width hd: row 2i+j (Meta / llama.cpp / llama2.c order, pair i, member j)
    /// moves to row j*hd/2 + i (Hugging Face order). Exact: rows are only moved.
    /// </summary>
    public static void InterleavedToHalfSplit(Span<float> weight, int heads, int headDim, int columns)
    {
        Permute(weight, heads, headDim, columns, toHalfSplit: true);
    }

    /// <summary>The inverse of <see cref="InterleavedToHalfSplit"/>: Hugging Face order back to interleaved pairs.</summary>
    public static void HalfSplitToInterleaved(Span<float> weight, int heads, int headDim, int columns)
    {
        Permute(weight, heads, headDim, columns, toHalfSplit: false);
    }

    private static void Permute(Span<float> weight, int heads, int headDim, int columns, bool toHalfSplit)
    {
        if (headDim % 2 != 0) throw new ArgumentException($"RoPE permutation: head_dim {headDim} must be even", nameof(headDim));
        if ((long)heads * headDim * columns != weight.Length)
            throw new ArgumentException($"RoPE permutation: weight has {weight.Length} values, expected heads {heads} x head_dim {headDim} x columns {columns}", nameof(weight));
        int half = headDim / 2, block = headDim * columns;
        var scratch = new float[block];
        for (int h = 0; h < heads; h++)
        {
            var head = weight.Slice(h * block, block);
            head.CopyTo(scratch);
            for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
            {
                int interleaved = 2 * i + j, halfSplit = j * half + i;
                int from = toHalfSplit ? interleaved : halfSplit, to = toHalfSplit ? halfSplit : interleaved;
                scratch.AsSpan(from * columns, columns).CopyTo(head.Slice(to * columns, columns));
            }
        }
    }
}
