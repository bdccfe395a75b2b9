using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// LoRA on the query and value projections of every layer of a frozen base, held outside the base (its
/// <see cref="Linear"/> layers stay unadapted, so replicas and other methods share one base), and the decoder
/// block the trained recurrence methods (RMT, Transformer-XL) run with it: the base's own pre-norm block
/// (<see cref="LlamaBlock.Forward"/>) with q and v adapted through <see cref="IProjectionAdapters"/>, optionally reading
/// keys and values of earlier rows in front of its own (a cached segment, a memory) as its prefix.
/// Tensor names are PEFT's: <c>base_model.model.model.layers.{L}.self_attn.{q_proj|v_proj}.lora_{A|B}.weight</c>.
/// </summary>
public sealed class QvLora : IDisposable
{
    private readonly Lora[] q;
    private readonly Lora[] v;
    private readonly QvAdapters blockAdapters;

    /// <param name="rng">Draws every A (B starts at zero, so a fresh adapter leaves the base unchanged).</param>
    public QvLora(LlamaModel baseModel, int rank, float alpha, Random rng)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(rng);
        if (baseModel.IsTrainable)
            throw new ArgumentException("QvLora: the base model was built with trainable weights; LoRA adapts a frozen base (build it with trainable: false)", nameof(baseModel));
        Base = baseModel;
        var c = baseModel.Config;
        q = new Lora[c.Layers];
        v = new Lora[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"base_model.model.model.layers.{l}.self_attn.";
            q[l] = new Lora(baseModel.Accelerator, c.Dim, c.Heads * c.HeadDim, rank, alpha, rng, p + "q_proj");
            v[l] = new Lora(baseModel.Accelerator, c.Dim, c.KvDim, rank, alpha, rng, p + "v_proj");
        }
        blockAdapters = new QvAdapters(q, v);
    }

    public LlamaModel Base { get; }

    /// <summary>The adapter of layer <paramref name="layer"/>'s query projection.</summary>
    public Lora Q(int layer) => q[layer];

    /// <summary>The adapter of layer <paramref name="layer"/>'s value projection.</summary>
    public Lora V(int layer) => v[layer];

    /// <summary>Every A and B with its tensor name, layer by layer (q then v).</summary>
    public IEnumerable<(string Name, Var Parameter)> NamedParameters()
    {
        for (int l = 0; l < q.Length; l++)
            foreach (var lora in new[] { q[l], v[l] })
                foreach (var p in lora.Parameters()) yield return (p.Name!, p);
    }

    /// <summary>
    /// A projection of layer <paramref name="layer"/>'s normed input x [T, dim]: the base's query and value
    /// projections with their adapter, any other projection (keys) as the base has it.
    /// </summary>
    public Var Project(Tape tape, int layer, Linear projection, Var x)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(projection);
        var attention = Base.Blocks[layer].Attention;
        Lora? lora = ReferenceEquals(projection, attention.Q) ? q[layer] : ReferenceEquals(projection, attention.V) ? v[layer] : null;
        if (lora is null) return projection.Forward(tape, x);
        var y = tape.Lora(x, projection.Weight, lora.A, lora.B, lora.Scale);
        return projection.Bias is { } bias ? tape.AddBias(y, bias) : y;
    }

    /// <summary>
    /// One decoder block over x [T, dim] at <paramref name="positions"/>: h = x + attn(norm(x)); out = h + mlp(norm(h)),
    /// where the queries read [<paramref name="front"/> ; the T rows' own keys] under <paramref name="mask"/> (queries
    /// aligned bottom-right, see <see cref="AttentionMask"/>). <paramref name="front"/> holds rotated keys and values;
    /// gradients flow into it when it requires them. <paramref name="kv"/> receives the T rows' own keys and values.
    /// This is the base's <see cref="LlamaBlock.Forward"/> with the q and v adapters as its <see cref="IProjectionAdapters"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="layer"/> is not a layer of the base.</exception>
    /// <exception cref="ArgumentException">The positions do not match x's rows.</exception>
    public Var Block(Tape tape, int layer, Var x, ReadOnlySpan<int> positions, KvPrefix? front, AttentionMask mask, out LayerKv kv)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(x);
        if ((uint)layer >= (uint)q.Length)
            throw new ArgumentOutOfRangeException(nameof(layer), $"QvLora.Block: layer {layer} is outside the base's {q.Length} layers");
        int tokens = x.Value.Dim(0);
        if (positions.Length != tokens)
            throw new ArgumentException($"QvLora.Block: {positions.Length} positions for {tokens} rows", nameof(positions));
        LayerKv own = default;
        var y = Base.Blocks[layer].Forward(tape, x, positions, prefix: front, mask: mask, adapters: blockAdapters, ownKeysValues: kv => own = kv);
        kv = own;
        return y;
    }

    /// <summary>The q and v adapters as the block's projections of every row (k and o stay the base's).</summary>
    private sealed class QvAdapters(Lora[] q, Lora[] v) : IProjectionAdapters
    {
        public Var? Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input) => which switch
        {
            AttentionProjection.Query => baseProjection.Forward(tape, input, q[layer]),
            AttentionProjection.Value => baseProjection.Forward(tape, input, v[layer]),
            _ => null,
        };
    }

    public void Dispose()
    {
        foreach (var lora in q) lora.Dispose();
        foreach (var lora in v) lora.Dispose();
    }
}
