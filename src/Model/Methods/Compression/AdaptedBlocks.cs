using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods.Compression;

/// <summary>
/// The blocks of a frozen <see cref="LlamaModel"/> run over input EMBEDDINGS (soft prompts, summary vectors, memory
/// slots) with this object's own LoRA adapters on a chosen subset of the attention projections (q_proj, k_proj,
/// v_proj, o_proj). The adapters are never attached to the base (<see cref="Linear.AttachLora"/>), so one base serves
/// the adapted encoder, a frozen decoder, other methods and side-by-side replicas at once. A fresh adapter (every
/// B = 0) leaves the base unchanged: <c>FinalNorm(Forward(x))</c> then equals <see cref="LlamaModel.Hidden"/>.
/// </summary>
public sealed class AdaptedBlocks : IDisposable
{
    /// <summary>The projections LoRA may adapt here.</summary>
    public static readonly string[] AttentionProjections = ["q_proj", "k_proj", "v_proj", "o_proj"];

    private readonly Dictionary<string, Lora>[] adapters;
    private readonly BlockAdapters blockAdapters;

    /// <param name="baseModel">A frozen base without attached LoRA.</param>
    /// <param name="projections">Which of q_proj, k_proj, v_proj, o_proj get an adapter (at least one).</param>
    /// <param name="rng">Draws every A (B starts at zero).</param>
    /// <param name="namePrefix">
    /// Prefix of the parameter names; the adapter of layer L's projection p is named
    /// <c>{namePrefix}layers.{L}.self_attn.{p}.lora_A.weight</c> (and lora_B), PEFT's layout when the prefix is
    /// <c>base_model.model.model.</c>.
    /// </param>
    public AdaptedBlocks(LlamaModel baseModel, int rank, float alpha, IReadOnlyList<string> projections, Random rng, string namePrefix)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(projections);
        ArgumentNullException.ThrowIfNull(rng);
        if (baseModel.IsTrainable)
            throw new ArgumentException("AdaptedBlocks: the base model was built with trainable weights; LoRA adapts a frozen base (build it with trainable: false)", nameof(baseModel));
        if (baseModel.TrainableParameters().Any())
            throw new ArgumentException("AdaptedBlocks: the base model has LoRA adapters attached; these adapters are kept apart from the base (detach them first)", nameof(baseModel));
        if (projections.Count == 0) throw new ArgumentException("AdaptedBlocks: name at least one projection to adapt", nameof(projections));
        foreach (var p in projections)
            if (!AttentionProjections.Contains(p))
                throw new ArgumentException($"AdaptedBlocks: cannot adapt '{p}'; expected some of {string.Join(", ", AttentionProjections)}", nameof(projections));
        Base = baseModel;
        Projections = [.. AttentionProjections.Where(projections.Contains)];
        var c = baseModel.Config;
        adapters = new Dictionary<string, Lora>[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            adapters[l] = new Dictionary<string, Lora>(StringComparer.Ordinal);
            var attention = baseModel.Blocks[l].Attention;
            foreach (var p in Projections)
            {
                var linear = Projection(attention, p);
                adapters[l][p] = new Lora(baseModel.Accelerator, linear.InFeatures, linear.OutFeatures, rank, alpha, rng, $"{namePrefix}layers.{l}.self_attn.{p}");
            }
        }
        blockAdapters = new BlockAdapters(adapters);
    }

    public LlamaModel Base { get; }

    /// <summary>The adapted projections, in q, k, v, o order.</summary>
    public IReadOnlyList<string> Projections { get; }

    /// <summary>Layer <paramref name="layer"/>'s adapter of projection <paramref name="projection"/>.</summary>
    public Lora Adapter(int layer, string projection) => adapters[layer][projection];

    /// <summary>Every A and B, layer by layer, projections in q, k, v, o order.</summary>
    public IEnumerable<Var> Parameters()
    {
        foreach (var layer in adapters)
            foreach (var p in Projections)
                foreach (var v in layer[p].Parameters()) yield return v;
    }

    /// <summary>
    /// The last block's output [T, dim] (the residual stream BEFORE the final norm) for input embeddings x [T, dim]
    /// at the given positions (default 0 .. T-1): causal attention (a local base layer keeps its sliding window),
    /// adapted projections through LoRA, everything else the base's own. Each layer is the base's
    /// <see cref="LlamaBlock.Forward"/> with this object's adapters as its <see cref="IProjectionAdapters"/>.
    /// </summary>
    /// <exception cref="ArgumentException">x is not [T, dim], or the positions do not match its rows.</exception>
    public Var Forward(Tape tape, Var x, ReadOnlySpan<int> positions = default)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(x);
        var c = Base.Config;
        int tokens = x.Value.Dim(0);
        if (x.Value.Rank != 2 || x.Value.Dim(1) != c.Dim)
            throw new ArgumentException($"AdaptedBlocks.Forward: inputs have shape {x.Value.ShapeString}, expected [T, {c.Dim}]", nameof(x));
        int[]? defaults = null;
        if (positions.IsEmpty)
        {
            defaults = new int[tokens];
            for (int t = 0; t < tokens; t++) defaults[t] = t;
            positions = defaults;
        }
        else if (positions.Length != tokens)
            throw new ArgumentException($"AdaptedBlocks.Forward: {positions.Length} positions for {tokens} inputs", nameof(positions));
        for (int layer = 0; layer < c.Layers; layer++) x = Base.Blocks[layer].Forward(tape, x, positions, adapters: blockAdapters);
        return x;
    }

    /// <summary>The adapters of each layer as the block's projections of every row; an unadapted projection stays the base's.</summary>
    private sealed class BlockAdapters(Dictionary<string, Lora>[] adapters) : IProjectionAdapters
    {
        public Var? Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input)
        {
            string name = which switch
            {
                AttentionProjection.Query => "q_proj",
                AttentionProjection.Key => "k_proj",
                AttentionProjection.Value => "v_proj",
                _ => "o_proj",
            };
            return adapters[layer].TryGetValue(name, out var lora) ? baseProjection.Forward(tape, input, lora) : null;
        }
    }

    private static Linear Projection(Attention attention, string name) => name switch
    {
        "q_proj" => attention.Q,
        "k_proj" => attention.K,
        "v_proj" => attention.V,
        "o_proj" => attention.O,
        _ => throw new ArgumentException($"unknown projection '{name}'", nameof(name)),
    };

    /// <summary>Copies every adapter value from <paramref name="other"/> (same base shape and projections).</summary>
    public void CopyFrom(AdaptedBlocks other)
    {
        ArgumentNullException.ThrowIfNull(other);
        var mine = Parameters().ToList();
        var theirs = other.Parameters().ToList();
        if (mine.Count != theirs.Count) throw new ArgumentException("AdaptedBlocks.CopyFrom: the adapters differ in layout", nameof(other));
        for (int i = 0; i < mine.Count; i++) Base.Accelerator.Kernels.Copy(theirs[i].Value, mine[i].Value);
    }

    public void Dispose()
    {
        foreach (var layer in adapters)
            foreach (var lora in layer.Values) lora.Dispose();
    }
}
