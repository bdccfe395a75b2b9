using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

namespace UioLlm.Training.Methods;

/// <summary>
/// LongNet (Ding et al., 2023): every layer's softmax attention replaced by dilated attention
/// (<see cref="DilatedAttention"/>: levels of segments w_i = segment x ratio^i keeping every r_i = ratio^i-th token,
/// heads at different offsets, the levels mixed by their softmax denominators), fine-tuned from the base with LoRA
/// on q and v; causal. The same dilated attention reads a stream at inference.
/// </summary>
/// <remarks>
/// Options: rank (8), alpha (16), segment (16: w_0), ratio (2), levels (3), range (0: 16 x the base window; the
/// longest document / stream the method is meant for). The session keeps every layer's rotated keys and values and
/// computes only the new queries (the pattern of a query reaches back a whole top-level segment; KvBytes grows with
/// the stream); the host computation costs O(T x stream x heads x head_dim) per layer and feed.
/// One unit per document (<see cref="DocumentLoss.Units"/> = 1); every layer is dilated, local layers of the base included.
/// </remarks>
public sealed class LongNetMethod : StreamAttentionFinetuneMethod<DilatedAttention>
{
    public const string MethodName = "longnet";

    /// <summary>The registry entry.</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MethodName,
        "LongNet: dilated attention (segments w x ratio^i, every ratio^i-th token, levels mixed by softmax denominators), LoRA q,v fine-tune",
        OptionInfos("q, v",
            new("segment", "16", "w_0: the first level's segment length (dilation 1)"),
            new("ratio", "2", "geometric growth of segment length and dilation per level"),
            new("levels", "3", "number of (segment, dilation) pairs")),
        (model, options, seed) => new LongNetMethod(model, options, seed));

    private LongNetMethod(LlamaModel baseModel, int seed, Settings settings)
        : base(MethodName, baseModel, seed, settings, ["q_proj", "v_proj"]) { }

    /// <summary>A fresh LongNet fine-tune over <paramref name="baseModel"/> (LoRA A drawn from <paramref name="seed"/>, B = 0).</summary>
    /// <exception cref="MethodOptionException">An option is out of range.</exception>
    public LongNetMethod(LlamaModel baseModel, MethodOptions options, int seed) : this(baseModel, seed, Read(baseModel, options)) { }

    private static Settings Read(LlamaModel baseModel, MethodOptions options) => Read(MethodName, baseModel, options, o =>
    {
        int segment = o.Int("segment", 16, 1, 1 << 20);
        int ratio = o.Int("ratio", 2, 2, 64);
        int levels = o.Int("levels", 3, 1, 16);
        if (Math.Pow(ratio, levels - 1) * segment > int.MaxValue)
            throw new MethodOptionException($"method '{MethodName}': the last segment, segment x ratio^(levels-1) = {segment} x {ratio}^{levels - 1}, is too long");
        return () => new DilatedAttention(segment, ratio, levels);
    });

    protected override Var TrainingAttention(Tape tape, int layer, Var q, Var k, Var v, int tokens) => Attention.Attend(tape, q, k, v);

    /// <summary>The dilated attention over the stream (keys and values kept; only new queries computed).</summary>
    protected override IStreamAttentionState NewStreamState() => Attention.NewStreamState(Base.Config.Layers);

    public override ITrainableMethod? CreateReplica() => new LongNetMethod(Base, new MethodOptions(MethodName, Options), seed: 0);
}
