using UioLlm.Kernels;
using UioLlm.Model.Autograd;

namespace UioLlm.Model.Modules;

/// <summary>Grouped-query self-attention with rotary positions and an optional KV cache.</summary>
public sealed partial class Attention
{
    public Attention(LlamaConfig config, LlamaLayerWeights weights, RopeTable rope, int layer, bool trainable = false)
    {
        Heads = config.Heads;
        KvHeads = config.KvHeads;
        HeadDim = config.HeadDim;
        Rope = rope;
        Layer = layer;
        Config = config;
        Q = new Linear(weights.Wq, trainable) { Bias = BiasVar(weights.Bq, trainable) };
        K = new Linear(weights.Wk, trainable) { Bias = BiasVar(weights.Bk, trainable) };
        V = new Linear(weights.Wv, trainable) { Bias = BiasVar(weights.Bv, trainable) };
        O = new Linear(weights.Wo, trainable);
    }

    private static Var? BiasVar(Tensor? bias, bool trainable) =>
        bias is null ? null : trainable ? Var.Leaf(bias, requiresGrad: true) : Var.Constant(bias);

    public int Heads { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int Layer { get; }
    /// <summary>The model's config: says whether this layer is local (<see cref="LlamaConfig.DecoderMask"/>).</summary>
    public LlamaConfig Config { get; }
    public RopeTable Rope { get; }
    public Linear Q { get; }
    public Linear K { get; }
    public Linear V { get; }
    public Linear O { get; }

    /// <summary>
    /// x [T, dim] at the given positions -> [T, dim]. Without a cache the T tokens attend causally to each
    /// other; with one, their keys and values are appended at row cache.Length and the queries attend to
    /// every stored token (the caller advances the cache after the last layer). A local layer
    /// (<see cref="LlamaConfig.LocalLayers"/>) sees only the last LocalWindow own tokens; the cache prefix or
    /// <paramref name="prefix"/> (UIO memory) is visible to every query of a global layer and, within its window of
    /// positions, to a local one (<see cref="LlamaConfig.DecoderMask"/>).
    /// </summary>
    /// <param name="rows">
    /// Optional per-row projections (see <see cref="IRowProjections"/>): for the rows it flags, the Q, K, V and O
    /// projections are what it returns instead of this layer's (e.g. Activation Beacon's beacon projections); null or
    /// an identity hook leaves the result bit-identical.
    /// </param>
    /// <param name="mask">
    /// The mask to use instead of the decoder's (<see cref="LlamaConfig.DecoderMask"/>), over the keys
    /// [prefix or cache ; own tokens] (e.g. a step-expansion mask whose prefix counts <paramref name="prefix"/>'s rows); null: the decoder's.
    /// </param>
    public Var Forward(Tape tape, Var x, ReadOnlySpan<int> positions, KvCache? cache = null, KvPrefix? prefix = null,
        IRowProjections? rows = null, AttentionMask? mask = null)
    {
        int tokens = x.Value.Dim(0);
        var q = tape.Rope(tape.Reshape(Project(tape, AttentionProjection.Query, Q, x, rows), tokens, Heads, HeadDim), positions, Rope);
        var k = tape.Rope(tape.Reshape(Project(tape, AttentionProjection.Key, K, x, rows), tokens, KvHeads, HeadDim), positions, Rope);
        var v = tape.Reshape(Project(tape, AttentionProjection.Value, V, x, rows), tokens, KvHeads, HeadDim);
        if (cache is not null) (k, v) = AppendToCache(tape, k, v, cache);
        var decoderMask = Config.DecoderMask(Layer, prefixLength: cache?.PrefixLength ?? 0);
        if (prefix is { } p)
        {
            // Keys and values that come before every own token (UIO's memory): visible to every query of a global
            // layer, to a local layer within its window of positions (LlamaConfig.DecoderMask); gradients flow.
            k = tape.ConcatRows(p.K, k);
            v = tape.ConcatRows(p.V, v);
            decoderMask = Config.DecoderMask(Layer, prefixLength: p.K.Value.Dim(0));
        }
        var used = mask ?? decoderMask;
        Observer?.Invoke(new AttentionProbe(Layer, q.Value, k.Value, used));
        var o = tape.Attention(q, k, v, used);
        return Project(tape, AttentionProjection.Output, O, tape.Reshape(o, tokens, Heads * HeadDim), rows);
    }

    /// <summary>
    /// One projection of all rows of <paramref name="input"/>, with the rows <paramref name="rows"/> flags replaced by
    /// what it returns: out = gather([base(input) ; hook(flagged rows)], map), a row copy, so an absent or identity
    /// hook changes no bit; gradients reach the base path of the unflagged rows and the hook's result of the flagged ones.
    /// </summary>
    private Var Project(Tape tape, AttentionProjection which, Linear linear, Var input, IRowProjections? rows)
    {
        var y = linear.Forward(tape, input);
        if (rows is null) return y;
        var flagged = rows.Rows;
        if (flagged.Count == 0) return y;
        int count = input.Value.Dim(0);
        var map = new int[count];
        for (int t = 0; t < count; t++) map[t] = t;
        var index = new int[flagged.Count];
        for (int i = 0; i < index.Length; i++)
        {
            int r = flagged[i];
            if ((uint)r >= (uint)count)
                throw new ArgumentException($"Attention layer {Layer}: flagged row {r} is outside the {count} rows", nameof(rows));
            if (map[r] != r)
                throw new ArgumentException($"Attention layer {Layer}: row {r} is flagged twice", nameof(rows));
            index[i] = r;
            map[r] = count + i;
        }
        var inputRows = tape.Embedding(input, index);
        var baseRows = tape.Embedding(y, index);
        var replaced = rows.Project(tape, Layer, which, linear, inputRows, baseRows);
        if (replaced.Value.Rank != 2 || replaced.Value.Dim(0) != index.Length || replaced.Value.Dim(1) != linear.OutFeatures)
            throw new InvalidOperationException(
                $"Attention layer {Layer}: the row projection of {which} returned {replaced.Value.ShapeString}, expected [{index.Length}, {linear.OutFeatures}]");
        return tape.Embedding(tape.ConcatRows(y, replaced), map);
    }

    /// <summary>
    /// A diagnostic hook (null: none): called on every forward with the rotated queries, the keys the queries
    /// attend to (prefix and cache included) and the mask, before the attention itself. Used to measure where a
    /// layer looks (e.g. the attention mass UIO's decoder puts on memory); the tensors are only valid during the call.
    /// </summary>
    public Action<AttentionProbe>? Observer { get; set; }

    private (Var K, Var V) AppendToCache(Tape tape, Var k, Var v, KvCache cache)
    {
        if (tape.IsRecording && (k.RequiresGrad || v.RequiresGrad))
            throw new InvalidOperationException(
                $"Attention layer {Layer}: the KV cache is for inference and carries no gradient; run under tape.NoGrad() or pass the whole sequence without a cache");
        int start = cache.Length, tokens = k.Value.Dim(0);
        cache.EnsureRoom(tokens);
        var kernels = tape.Accelerator.Kernels;
        kernels.Copy(k.Value, cache.Keys(Layer).Slice(start, tokens));
        kernels.Copy(v.Value, cache.Values(Layer).Slice(start, tokens));
        return (Var.Constant(cache.Keys(Layer).Slice(0, start + tokens)), Var.Constant(cache.Values(Layer).Slice(0, start + tokens)));
    }
}

/// <summary>The four projections of an attention layer, as <see cref="IRowProjections"/> sees them.</summary>
public enum AttentionProjection
{
    /// <summary>q_proj: normed input -> queries (before RoPE).</summary>
    Query,
    /// <summary>k_proj: normed input -> keys (before RoPE).</summary>
    Key,
    /// <summary>v_proj: normed input -> values.</summary>
    Value,
    /// <summary>o_proj: attention output [rows, heads * head_dim] -> the residual update.</summary>
    Output,
}

/// <summary>
/// A caller's own attention projections for some rows of a layer's input (Activation Beacon's beacon rows, an
/// encoder's memory rows), so such methods reuse <see cref="LlamaBlock.Forward"/> instead of copying it. For the
/// rows in <see cref="Rows"/>, each of Q, K, V and O is replaced by what <see cref="Project"/> returns; every other
/// row goes through the layer's own projection. Queries and keys are rotated after the hook.
/// </summary>
public interface IRowProjections
{
    /// <summary>The flagged rows of the layer input (distinct, each in [0, T)); empty: the hook does nothing.</summary>
    IReadOnlyList<int> Rows { get; }

    /// <summary>
    /// The projection of the flagged rows, [Rows.Count, baseProjection.OutFeatures]: <paramref name="input"/> holds
    /// their input rows (the normed states for Q/K/V, the attention output for O), <paramref name="baseOutput"/> what
    /// <paramref name="baseProjection"/> gives them (return it for the identity).
    /// </summary>
    Var Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input, Var baseOutput);
}

/// <summary>What <see cref="Attention.Observer"/> sees: queries [Tq, heads, head_dim] and keys [Tk, kv_heads, head_dim], both rotated, and the mask.</summary>
public readonly record struct AttentionProbe(int Layer, Tensor Queries, Tensor Keys, AttentionMask Mask)
{
    /// <summary>
    /// Per query head, the softmax attention mass that the last query puts on keys [0, <paramref name="keys"/>)
    /// (e.g. the memory prefix), from the visible keys under the mask; computed on the host in double.
    /// </summary>
    public double[] LastQueryMassOn(int keys)
    {
        int tq = Queries.Dim(0), heads = Queries.Dim(1), d = Queries.Dim(2), tk = Keys.Dim(0), kvHeads = Keys.Dim(1);
        var q = Queries.ToArray();
        var k = Keys.ToArray();
        var mass = new double[heads];
        double scale = 1 / Math.Sqrt(d);
        var scores = new double[tk];
        for (int h = 0; h < heads; h++)
        {
            int g = h / (heads / kvHeads);
            double max = double.NegativeInfinity;
            for (int j = 0; j < tk; j++)
            {
                if (!Mask.IsVisible(h, heads, tq - 1, j, tq, tk)) { scores[j] = double.NegativeInfinity; continue; }
                double dot = 0;
                for (int e = 0; e < d; e++) dot += (double)q[((tq - 1) * heads + h) * d + e] * k[(j * kvHeads + g) * d + e];
                scores[j] = dot * scale;
                max = Math.Max(max, scores[j]);
            }
            double total = 0, on = 0;
            for (int j = 0; j < tk; j++)
            {
                double p = double.IsNegativeInfinity(scores[j]) ? 0 : Math.Exp(scores[j] - max);
                total += p;
                if (j < keys) on += p;
            }
            mass[h] = total > 0 ? on / total : 0;
        }
        return mass;
    }
}

/// <summary>
/// Keys [P, kv_heads, head_dim] (already rotated) and values placed before a layer's own keys: every query
/// sees all of them. UIO's decoder reads its memories this way.
/// </summary>
public readonly record struct KvPrefix(Var K, Var V);

/// <summary>The SwiGLU feed-forward block: down(silu(gate(x)) * up(x)).</summary>
public sealed partial class Mlp(LlamaLayerWeights weights, bool trainable = false)
{
    public Linear Gate { get; } = new(weights.W1, trainable);
    public Linear Up { get; } = new(weights.W3, trainable);
    public Linear Down { get; } = new(weights.W2, trainable);

    public Var Forward(Tape tape, Var x) => Down.Forward(tape, tape.SwiGlu(Gate.Forward(tape, x), Up.Forward(tape, x)));
}

/// <summary>One pre-norm decoder layer: h = x + attn(norm(x)); out = h + mlp(norm(h)).</summary>
public sealed partial class LlamaBlock
{
    public LlamaBlock(LlamaConfig config, LlamaLayerWeights weights, RopeTable rope, int layer, bool trainable = false)
    {
        AttentionNorm = new RmsNorm(weights.AttentionNorm, config.NormEps, trainable);
        Attention = new Attention(config, weights, rope, layer, trainable);
        FfnNorm = new RmsNorm(weights.FfnNorm, config.NormEps, trainable);
        Mlp = new Mlp(weights, trainable);
    }

    /// <summary>The layer's weights as tape values (frozen constants unless the model was built trainable).</summary>
    public IEnumerable<Var> Weights()
    {
        yield return AttentionNorm.Weight;
        foreach (var (_, linear) in Projections())
        {
            yield return linear.Weight;
            if (linear.Bias is { } bias) yield return bias;
        }
        yield return FfnNorm.Weight;
    }

    public RmsNorm AttentionNorm { get; }
    public Attention Attention { get; }
    public RmsNorm FfnNorm { get; }
    public Mlp Mlp { get; }

    /// <summary>
    /// x [T, dim] -> [T, dim]; <paramref name="rows"/> and <paramref name="mask"/> are passed to
    /// <see cref="Modules.Attention.Forward"/> (per-row projections and a mask instead of the decoder's).
    /// </summary>
    public Var Forward(Tape tape, Var x, ReadOnlySpan<int> positions, KvCache? cache = null, KvPrefix? prefix = null,
        IRowProjections? rows = null, AttentionMask? mask = null)
    {
        var h = tape.Add(x, Attention.Forward(tape, AttentionNorm.Forward(tape, x), positions, cache, prefix, rows, mask));
        return tape.Add(h, Mlp.Forward(tape, FfnNorm.Forward(tape, h)));
    }

    /// <summary>The projections by their Hugging Face short names (q_proj, k_proj, ..., down_proj).</summary>
    public IEnumerable<(string Name, Linear Linear)> Projections()
    {
        yield return ("q_proj", Attention.Q);
        yield return ("k_proj", Attention.K);
        yield return ("v_proj", Attention.V);
        yield return ("o_proj", Attention.O);
        yield return ("gate_proj", Mlp.Gate);
        yield return ("up_proj", Mlp.Up);
        yield return ("down_proj", Mlp.Down);
    }
}
