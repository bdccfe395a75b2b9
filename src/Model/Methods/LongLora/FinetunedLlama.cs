using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// A frozen base model seen through a fine-tune's own parameters, without touching the base: LoRA pairs on every
/// layer's q, k, v and o projections, optionally trainable copies of the RMSNorm gains and the token embedding
/// (LongLoRA's "LoRA+"), and a RoPE table of the fine-tune's own (PI, YaRN, a raised base, or the model's).
/// Several fine-tunes (a method and its replicas) can share one base. Used by LongLoRA and the RoPE-scaling fine-tunes.
/// </summary>
/// <remarks>
/// Parameter names are the adapter file's names, PEFT-style: <c>model.layers.{l}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight</c>,
/// and with LoRA+ <c>model.embed_tokens.weight</c>, <c>model.layers.{l}.input_layernorm.weight</c>,
/// <c>model.layers.{l}.post_attention_layernorm.weight</c> and <c>model.norm.weight</c>. A base with tied embeddings
/// reads its output head from the (trained) embedding, as a tied Hugging Face model does.
/// </remarks>
public sealed class FinetunedLlama : IDisposable
{
    /// <summary>
    /// A layer's attention in place of the engine's masked softmax: rotated queries q [T, heads, head_dim], rotated
    /// keys k and values v [T, kv_heads, head_dim] of the new tokens, which sit at positions <paramref name="start"/>..;
    /// returns [T, heads, head_dim].
    /// </summary>
    public delegate Var LayerAttention(Tape tape, int layer, Var q, Var k, Var v, int start);

    /// <summary>The projections that carry an adapter, by their Hugging Face names.</summary>
    public static readonly string[] AdaptedProjections = ["q_proj", "k_proj", "v_proj", "o_proj"];

    private readonly Lora?[][] adapters;          // [layer][q, k, v, o]; null: that projection is not adapted
    private readonly Var[] attentionNorms, ffnNorms;
    private readonly List<(string Name, Var Parameter, bool Decay)> parameters = [];
    private readonly List<Var> ownedCopies = [];

    /// <param name="baseModel">The frozen base (never changed).</param>
    /// <param name="rope">The table every position is rotated with, in training and at inference.</param>
    /// <param name="rank">LoRA rank r.</param>
    /// <param name="alpha">LoRA alpha (the update is scaled by alpha / r).</param>
    /// <param name="trainNormsAndEmbedding">Also train copies of the norms and the embedding (LoRA+).</param>
    /// <param name="seed">Draws the LoRA A matrices (B starts at zero: a fresh fine-tune is the base under <paramref name="rope"/>).</param>
    /// <param name="adapted">The projections that carry LoRA (of <see cref="AdaptedProjections"/>; null: all four).</param>
    public FinetunedLlama(LlamaModel baseModel, RopeTable rope, int rank, float alpha, bool trainNormsAndEmbedding, int seed, IReadOnlyCollection<string>? adapted = null)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(rope);
        if (baseModel.IsTrainable)
            throw new ArgumentException("FinetunedLlama: the base model must be frozen (its weights are trainable leaves)", nameof(baseModel));
        var c = baseModel.Config;
        if (rope.HeadDim != c.HeadDim)
            throw new ArgumentException($"FinetunedLlama: the RoPE table covers head_dim {rope.HeadDim}, the model has {c.HeadDim}", nameof(rope));
        Base = baseModel;
        Rope = rope;
        TrainsNormsAndEmbedding = trainNormsAndEmbedding;
        var rng = new Random(seed);
        var acc = baseModel.Accelerator;
        if (trainNormsAndEmbedding)
        {
            Embedding = TrainableCopy(baseModel.Embedding.Value, "model.embed_tokens.weight", decay: false);
        }
        else
        {
            Embedding = baseModel.Embedding;
        }
        if (adapted is not null && adapted.Any(a => !AdaptedProjections.Contains(a)))
            throw new ArgumentException($"FinetunedLlama: adapted projections must be of {string.Join(", ", AdaptedProjections)}", nameof(adapted));
        bool Adapt(string projection) => adapted is null || adapted.Contains(projection);
        adapters = new Lora?[c.Layers][];
        attentionNorms = new Var[c.Layers];
        ffnNorms = new Var[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            var block = baseModel.Blocks[l];
            string p = $"model.layers.{l}.";
            if (trainNormsAndEmbedding) attentionNorms[l] = TrainableCopy(block.AttentionNorm.Weight.Value, p + "input_layernorm.weight", decay: false);
            else attentionNorms[l] = block.AttentionNorm.Weight;
            var a = block.Attention;
            adapters[l] =
            [
                Adapt("q_proj") ? new Lora(acc, a.Q.InFeatures, a.Q.OutFeatures, rank, alpha, rng, p + "self_attn.q_proj") : null,
                Adapt("k_proj") ? new Lora(acc, a.K.InFeatures, a.K.OutFeatures, rank, alpha, rng, p + "self_attn.k_proj") : null,
                Adapt("v_proj") ? new Lora(acc, a.V.InFeatures, a.V.OutFeatures, rank, alpha, rng, p + "self_attn.v_proj") : null,
                Adapt("o_proj") ? new Lora(acc, a.O.InFeatures, a.O.OutFeatures, rank, alpha, rng, p + "self_attn.o_proj") : null,
            ];
            foreach (var lora in adapters[l])
            {
                if (lora is null) continue;
                parameters.Add((lora.A.Name!, lora.A, true));
                parameters.Add((lora.B.Name!, lora.B, true));
            }
            if (trainNormsAndEmbedding) ffnNorms[l] = TrainableCopy(block.FfnNorm.Weight.Value, p + "post_attention_layernorm.weight", decay: false);
            else ffnNorms[l] = block.FfnNorm.Weight;
        }
        FinalNorm = trainNormsAndEmbedding ? TrainableCopy(baseModel.FinalNorm.Weight.Value, "model.norm.weight", decay: false) : baseModel.FinalNorm.Weight;
        HeadWeight = c.TiedEmbeddings ? Embedding : baseModel.Head.Weight;
        if (baseModel.Head.Bias is not null)
            throw new NotSupportedException("FinetunedLlama: an output head with a bias is not supported");
    }

    /// <summary>The frozen base.</summary>
    public LlamaModel Base { get; }
    public LlamaConfig Config => Base.Config;
    /// <summary>The RoPE table of training and inference.</summary>
    public RopeTable Rope { get; }
    /// <summary>True when the norms and the embedding are trained too (LoRA+).</summary>
    public bool TrainsNormsAndEmbedding { get; }
    /// <summary>The token embedding read (a trainable copy under LoRA+, else the base's).</summary>
    public Var Embedding { get; }
    public Var FinalNorm { get; }
    /// <summary>The output head's weight (the embedding when the base ties them).</summary>
    public Var HeadWeight { get; }

    /// <summary>Every trainable leaf, with its adapter name and whether weight decay applies (LoRA: yes; norms, embedding: no), in a fixed order.</summary>
    public IReadOnlyList<(string Name, Var Parameter, bool Decay)> Parameters => parameters;

    /// <summary>The LoRA pairs of layer <paramref name="layer"/>: q, k, v, o (null: that projection is not adapted).</summary>
    public IReadOnlyList<Lora?> Adapters(int layer) => adapters[layer];

    /// <summary>The gain of layer <paramref name="layer"/>'s attention norm and of its feed-forward norm, as read.</summary>
    public (Var Attention, Var Ffn) Norms(int layer) => (attentionNorms[layer], ffnNorms[layer]);

    /// <summary>Copies every parameter's value from <paramref name="other"/> (same base shape and settings).</summary>
    public void CopyParametersFrom(FinetunedLlama other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.parameters.Count != parameters.Count)
            throw new ArgumentException($"FinetunedLlama.CopyParametersFrom: {other.parameters.Count} parameters, this one has {parameters.Count}", nameof(other));
        for (int i = 0; i < parameters.Count; i++)
        {
            var (name, dst, _) = parameters[i];
            var src = other.parameters[i].Parameter.Value;
            if (other.parameters[i].Name != name || !src.Shape.SequenceEqual(dst.Value.Shape))
                throw new ArgumentException($"FinetunedLlama.CopyParametersFrom: parameter {i} is '{other.parameters[i].Name}' {src.ShapeString}, expected '{name}' {dst.Value.ShapeString}", nameof(other));
            Base.Accelerator.Kernels.Copy(src, dst.Value);
        }
    }

    /// <summary>
    /// Final-normed hidden states [T, dim] of <paramref name="ids"/> at positions 0..T-1 (each token's input
    /// embedding is looked up in <see cref="Embedding"/>); <paramref name="mask"/> gives each layer's attention mask.
    /// </summary>
    public Var Hidden(Tape tape, ReadOnlySpan<int> ids, Func<int, AttentionMask> mask)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(mask);
        CheckIds(ids);
        var positions = new int[ids.Length];
        for (int t = 0; t < positions.Length; t++) positions[t] = t;
        var x = tape.Embedding(Embedding, ids);
        for (int l = 0; l < Config.Layers; l++) x = Block(tape, l, x, positions, cache: null, mask(l), layerAttention: null);
        return tape.RmsNorm(x, FinalNorm, Base.FinalNorm.Eps);
    }

    /// <summary>
    /// Final-normed hidden states [T, dim] of <paramref name="ids"/> at positions <paramref name="start"/>.., every
    /// layer attending through <paramref name="attention"/> (which sees only these tokens' queries, keys and values;
    /// a session keeps what it needs of earlier ones itself).
    /// </summary>
    public Var Hidden(Tape tape, ReadOnlySpan<int> ids, LayerAttention attention, int start = 0)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(attention);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        CheckIds(ids);
        var positions = new int[ids.Length];
        for (int t = 0; t < positions.Length; t++) positions[t] = checked(start + t);
        var x = tape.Embedding(Embedding, ids);
        for (int l = 0; l < Config.Layers; l++) x = Block(tape, l, x, positions, cache: null, default, attention);
        return tape.RmsNorm(x, FinalNorm, Base.FinalNorm.Eps);
    }

    /// <summary>Logits [T, vocab] of <paramref name="ids"/> at positions <paramref name="start"/>.. through <paramref name="attention"/>.</summary>
    public Var Logits(Tape tape, ReadOnlySpan<int> ids, LayerAttention attention, int start = 0) =>
        tape.Linear(Hidden(tape, ids, attention, start), HeadWeight);

    /// <summary>Mean next-token cross-entropy of <paramref name="targets"/> (-100: unscored) after <paramref name="ids"/> through <paramref name="attention"/>.</summary>
    public Var Loss(Tape tape, ReadOnlySpan<int> ids, ReadOnlySpan<int> targets, LayerAttention attention)
    {
        if (targets.Length != ids.Length)
            throw new ArgumentException($"FinetunedLlama.Loss: {targets.Length} targets for {ids.Length} tokens", nameof(targets));
        return tape.LinearCrossEntropy(Hidden(tape, ids, attention), HeadWeight, targets);
    }

    /// <summary>Logits [T, vocab] of <paramref name="ids"/> under the per-layer masks.</summary>
    public Var Logits(Tape tape, ReadOnlySpan<int> ids, Func<int, AttentionMask> mask) => tape.Linear(Hidden(tape, ids, mask), HeadWeight);

    /// <summary>Mean next-token cross-entropy of <paramref name="targets"/> (-100: unscored) after <paramref name="ids"/> under the per-layer masks.</summary>
    public Var Loss(Tape tape, ReadOnlySpan<int> ids, ReadOnlySpan<int> targets, Func<int, AttentionMask> mask)
    {
        if (targets.Length != ids.Length)
            throw new ArgumentException($"FinetunedLlama.Loss: {targets.Length} targets for {ids.Length} tokens", nameof(targets));
        return tape.LinearCrossEntropy(Hidden(tape, ids, mask), HeadWeight, targets);
    }

    /// <summary>
    /// Tape-free step of a cached stream: appends <paramref name="ids"/> at positions cache.Length.. (keys stored
    /// rotated) and returns the logits [T, vocab] of every new token, each attending causally to the whole cache
    /// (the layer's decoder mask: full attention, or a local layer's window). Runs under the tape's no-grad scope.
    /// </summary>
    public Var Step(Tape tape, ReadOnlySpan<int> ids, KvCache cache)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(cache);
        CheckIds(ids);
        using var _ = tape.NoGrad();
        cache.EnsureCapacity(cache.Length + ids.Length);
        var positions = new int[ids.Length];
        for (int t = 0; t < positions.Length; t++) positions[t] = checked(cache.Length + t);
        var x = tape.Embedding(Embedding, ids);
        for (int l = 0; l < Config.Layers; l++) x = Block(tape, l, x, positions, cache, Config.DecoderMask(l), layerAttention: null);
        cache.Advance(ids.Length);
        return tape.Linear(tape.RmsNorm(x, FinalNorm, Base.FinalNorm.Eps), HeadWeight);
    }

    /// <summary>One pre-norm block with the adapted attention; with a cache, the new keys/values are appended first.</summary>
    private Var Block(Tape tape, int layer, Var x, int[] positions, KvCache? cache, AttentionMask mask, LayerAttention? layerAttention)
    {
        var c = Config;
        var block = Base.Blocks[layer];
        var attention = block.Attention;
        var lora = adapters[layer];
        int tokens = x.Value.Dim(0);
        var normed = tape.RmsNorm(x, attentionNorms[layer], block.AttentionNorm.Eps);
        var q = tape.Rope(tape.Reshape(Project(tape, attention.Q, lora[0], normed), tokens, c.Heads, c.HeadDim), positions, Rope);
        var k = tape.Rope(tape.Reshape(Project(tape, attention.K, lora[1], normed), tokens, c.KvHeads, c.HeadDim), positions, Rope);
        var v = tape.Reshape(Project(tape, attention.V, lora[2], normed), tokens, c.KvHeads, c.HeadDim);
        if (cache is not null)
        {
            int start = cache.Length;
            var kernels = tape.Accelerator.Kernels;
            kernels.Copy(k.Value, cache.Keys(layer).Slice(start, tokens));
            kernels.Copy(v.Value, cache.Values(layer).Slice(start, tokens));
            k = Var.Constant(cache.Keys(layer).Slice(0, start + tokens));
            v = Var.Constant(cache.Values(layer).Slice(0, start + tokens));
        }
        var o = layerAttention is null ? tape.Attention(q, k, v, mask) : layerAttention(tape, layer, q, k, v, positions.Length == 0 ? 0 : positions[0]);
        var h = tape.Add(x, Project(tape, attention.O, lora[3], tape.Reshape(o, tokens, c.Heads * c.HeadDim)));
        return tape.Add(h, block.Mlp.Forward(tape, tape.RmsNorm(h, ffnNorms[layer], block.FfnNorm.Eps)));
    }

    private static Var Project(Tape tape, Linear linear, Lora? lora, Var x)
    {
        if (lora is null) return linear.Bias is null ? tape.Linear(x, linear.Weight) : tape.AddBias(tape.Linear(x, linear.Weight), linear.Bias);
        var y = tape.Lora(x, linear.Weight, lora.A, lora.B, lora.Scale);
        return linear.Bias is null ? y : tape.AddBias(y, linear.Bias);
    }

    private Var TrainableCopy(Tensor source, string name, bool decay)
    {
        var copy = Base.Accelerator.Allocate(source.Shape, name);
        Base.Accelerator.Kernels.Copy(source, copy);
        var leaf = Var.Leaf(copy, requiresGrad: true, name);
        ownedCopies.Add(leaf);
        parameters.Add((name, leaf, decay));
        return leaf;
    }

    private void CheckIds(ReadOnlySpan<int> ids)
    {
        if (ids.IsEmpty) throw new ArgumentException("FinetunedLlama: no token ids given", nameof(ids));
        int vocab = Config.VocabSize;
        foreach (int id in ids)
            if ((uint)id >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), $"FinetunedLlama: token id {id} is outside the vocabulary [0, {vocab})");
    }

    private bool disposed;

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var layer in adapters)
            foreach (var lora in layer) lora?.Dispose();
        foreach (var copy in ownedCopies)
        {
            copy.DisposeLeaf();
            copy.Value.Dispose();
        }
        ownedCopies.Clear();
    }
}
