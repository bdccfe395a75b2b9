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
    /// <param name="adapters">
    /// Optional projections of every row (see <see cref="IProjectionAdapters"/>, e.g. LoRA kept apart from the base):
    /// where it returns one, it replaces this layer's projection for all rows (before <paramref name="rows"/> acts);
    /// null leaves the result bit-identical.
    /// </param>
    /// <param name="ownKeysValues">
    /// Optional: called with the keys (before and after RoPE) and values the layer projected from its own T rows, each
    /// [T, kv_heads, head_dim], before the cache or <paramref name="prefix"/> joins them (e.g. to keep a segment's keys for
    /// the next one, or un-rotated keys for a memory); they are tape values, so gradients flow into whatever the caller
    /// builds from them. Null: not called; calling it records nothing on the tape.
    /// </param>
    public Var Forward(Tape tape, Var x, ReadOnlySpan<int> positions, KvCache? cache = null, KvPrefix? prefix = null,
        IRowProjections? rows = null, AttentionMask? mask = null, IProjectionAdapters? adapters = null, Action<LayerKv>? ownKeysValues = null) =>
        Run(tape, x, sequences: 0, positions, cache, prefix, rows, mask, adapters, ownKeysValues);

    /// <summary>
    /// A batch of <paramref name="sequences"/> independent sequences of equal length W, stacked as x [sequences * W, dim]
    /// -> [sequences * W, dim]: every sequence is at the same <paramref name="positions"/> (length W) and attends only to
    /// itself, under <paramref name="mask"/> (null: the decoder's, <see cref="LlamaConfig.DecoderMask"/>) over its own W
    /// keys; the attention runs once on [sequences, W, heads, head_dim]. No cache and no prefix; <see cref="Observer"/>
    /// is not called (its probe describes one sequence). <paramref name="adapters"/> and <paramref name="rows"/> (row
    /// indices into the stacked x) act as in <see cref="Forward"/>. UIO's encoder runs its segments this way.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequences"/> is below 1.</exception>
    /// <exception cref="ArgumentException">x is not [sequences * positions.Length, dim], or no positions are given.</exception>
    public Var ForwardBatch(Tape tape, Var x, int sequences, ReadOnlySpan<int> positions, AttentionMask? mask = null,
        IProjectionAdapters? adapters = null, IRowProjections? rows = null)
    {
        CheckBatch(x, sequences, positions);
        return Run(tape, x, sequences, positions, cache: null, prefix: null, rows, mask, adapters, ownKeysValues: null);
    }

    /// <summary>Throws unless x [sequences * positions.Length, dim] holds whole sequences of the positions' length.</summary>
    internal void CheckBatch(Var x, int sequences, ReadOnlySpan<int> positions)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (sequences < 1)
            throw new ArgumentOutOfRangeException(nameof(sequences), $"Attention layer {Layer}: a batch holds at least one sequence, got {sequences}");
        if (positions.IsEmpty)
            throw new ArgumentException($"Attention layer {Layer}: a batched forward needs the positions of one sequence, got none", nameof(positions));
        if (x.Value.Rank != 2 || x.Value.Dim(0) != sequences * positions.Length)
            throw new ArgumentException(
                $"Attention layer {Layer}: batched input has shape {x.Value.ShapeString}, expected [{sequences} x {positions.Length} = {sequences * positions.Length}, dim]",
                nameof(x));
    }

    /// <summary>The forward of <see cref="Forward"/> (sequences = 0) and <see cref="ForwardBatch"/> (sequences &gt;= 1: 4-D attention).</summary>
    private Var Run(Tape tape, Var x, int sequences, ReadOnlySpan<int> positions, KvCache? cache, KvPrefix? prefix,
        IRowProjections? rows, AttentionMask? mask, IProjectionAdapters? adapters, Action<LayerKv>? ownKeysValues)
    {
        int tokens = x.Value.Dim(0);
        var q = tape.Rope(tape.Reshape(Project(tape, AttentionProjection.Query, Q, x, rows, adapters), HeadShape(tokens, sequences, Heads)), positions, Rope);
        var rawK = tape.Reshape(Project(tape, AttentionProjection.Key, K, x, rows, adapters), HeadShape(tokens, sequences, KvHeads));
        var k = tape.Rope(rawK, positions, Rope);
        var v = tape.Reshape(Project(tape, AttentionProjection.Value, V, x, rows, adapters), HeadShape(tokens, sequences, KvHeads));
        ownKeysValues?.Invoke(new LayerKv(rawK, k, v));
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
        if (sequences == 0) Observer?.Invoke(new AttentionProbe(Layer, q.Value, k.Value, used));
        var o = tape.Attention(q, k, v, used);
        return Project(tape, AttentionProjection.Output, O, tape.Reshape(o, tokens, Heads * HeadDim), rows, adapters);
    }

    /// <summary>[tokens, heads, head_dim], or [sequences, tokens / sequences, heads, head_dim] for a batch.</summary>
    private int[] HeadShape(int tokens, int sequences, int heads) =>
        sequences == 0 ? [tokens, heads, HeadDim] : [sequences, tokens / sequences, heads, HeadDim];

    /// <summary>
    /// One projection of all rows of <paramref name="input"/> (<paramref name="adapters"/>' where it gives one, else the
    /// layer's own), with the rows <paramref name="rows"/> flags replaced by what it returns:
    /// out = gather([base(input) ; hook(flagged rows)], map), a row copy, so an absent or identity hook changes no bit;
    /// gradients reach the base path of the unflagged rows and the hook's result of the flagged ones.
    /// </summary>
    private Var Project(Tape tape, AttentionProjection which, Linear linear, Var input, IRowProjections? rows, IProjectionAdapters? adapters)
    {
        var y = adapters is null ? linear.Forward(tape, input) : Adapted(tape, which, linear, input, adapters);
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

    /// <summary>The adapters' projection of every row, checked for shape; the layer's own where they give none.</summary>
    private Var Adapted(Tape tape, AttentionProjection which, Linear linear, Var input, IProjectionAdapters adapters)
    {
        if (adapters.Project(tape, Layer, which, linear, input) is not { } adapted) return linear.Forward(tape, input);
        int count = input.Value.Dim(0);
        if (adapted.Value.Rank != 2 || adapted.Value.Dim(0) != count || adapted.Value.Dim(1) != linear.OutFeatures)
            throw new InvalidOperationException(
                $"Attention layer {Layer}: the adapted projection of {which} returned {adapted.Value.ShapeString}, expected [{count}, {linear.OutFeatures}]");
        return adapted;
    }

    /// <summary>
    /// A diagnostic hook (null: none): called on every unbatched forward (<see cref="Forward"/>, not
    /// <see cref="ForwardBatch"/>) with the rotated queries, the keys the queries
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

/// <summary>
/// A caller's own projections for EVERY row of a layer's input, e.g. LoRA adapters kept apart from the frozen base
/// (UIO's encoder LoRA on W_Q and W_V through <see cref="Linear.Forward(Tape, Var, Lora)"/>), so adapted passes reuse
/// <see cref="LlamaBlock.Forward"/> and <see cref="LlamaBlock.ForwardBatch"/> instead of copying them. Unlike
/// <see cref="IRowProjections"/> there is no gather: a projection it returns replaces the layer's outright. Queries and
/// keys are rotated after it; an <see cref="IRowProjections"/> hook of the same forward sees its result as the base output.
/// </summary>
public interface IProjectionAdapters
{
    /// <summary>
    /// The projection <paramref name="which"/> of layer <paramref name="layer"/> for all rows of <paramref name="input"/>
    /// (the normed states for Q/K/V, the attention output for O), [rows, baseProjection.OutFeatures]; or null for the
    /// layer's own (<paramref name="baseProjection"/>'s forward), which leaves that projection bit-identical.
    /// </summary>
    Var? Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input);
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
/// One layer's keys and values of the rows it just read: keys before RoPE (<paramref name="RawKeys"/>) and after
/// (<paramref name="Keys"/>), and <paramref name="Values"/>; all [T, kv_heads, head_dim]. What
/// <see cref="Attention.Forward"/> hands its ownKeysValues callback.
/// </summary>
public readonly record struct LayerKv(Var RawKeys, Var Keys, Var Values);

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
    /// x [T, dim] -> [T, dim]; <paramref name="rows"/>, <paramref name="mask"/> and <paramref name="adapters"/> are passed
    /// to <see cref="Modules.Attention.Forward"/> (per-row projections, a mask instead of the decoder's, projections of
    /// every row).
    /// </summary>
    /// <param name="attentionInput">
    /// Optional: called with the attention input norm(x) [T, dim] as soon as it is computed, before the attention reads
    /// it (e.g. to gather rows of it as memory states, recorded on the tape in that order); null: not called.
    /// </param>
    /// <param name="ownKeysValues">
    /// Optional: called with the keys (before and after RoPE) and values the layer projected from its own T rows (see
    /// <see cref="Modules.Attention.Forward"/>); null: not called.
    /// </param>
    public Var Forward(Tape tape, Var x, ReadOnlySpan<int> positions, KvCache? cache = null, KvPrefix? prefix = null,
        IRowProjections? rows = null, AttentionMask? mask = null, IProjectionAdapters? adapters = null, Action<Var>? attentionInput = null,
        Action<LayerKv>? ownKeysValues = null)
    {
        var normed = AttentionNorm.Forward(tape, x);
        attentionInput?.Invoke(normed);
        var h = tape.Add(x, Attention.Forward(tape, normed, positions, cache, prefix, rows, mask, adapters, ownKeysValues));
        return tape.Add(h, Mlp.Forward(tape, FfnNorm.Forward(tape, h)));
    }

    /// <summary>
    /// A batch of <paramref name="sequences"/> independent sequences of equal length W stacked as x [sequences * W, dim]
    /// -> [sequences * W, dim], each at the same <paramref name="positions"/> (length W) and attending only to itself
    /// under <paramref name="mask"/> (null: the decoder's); see <see cref="Modules.Attention.ForwardBatch"/>. Norms,
    /// projections and MLP are the same row-wise code as in <see cref="Forward"/>. UIO's encoder runs its segments this way.
    /// </summary>
    /// <param name="attentionInput">As in <see cref="Forward"/>: called with norm(x) [sequences * W, dim].</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequences"/> is below 1.</exception>
    /// <exception cref="ArgumentException">x is not [sequences * positions.Length, dim], or no positions are given.</exception>
    public Var ForwardBatch(Tape tape, Var x, int sequences, ReadOnlySpan<int> positions, AttentionMask? mask = null,
        IProjectionAdapters? adapters = null, IRowProjections? rows = null, Action<Var>? attentionInput = null)
    {
        Attention.CheckBatch(x, sequences, positions);
        var normed = AttentionNorm.Forward(tape, x);
        attentionInput?.Invoke(normed);
        var h = tape.Add(x, Attention.ForwardBatch(tape, normed, sequences, positions, mask, adapters, rows));
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
