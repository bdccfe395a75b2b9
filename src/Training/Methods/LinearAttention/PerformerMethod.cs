using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

namespace UioLlm.Training.Methods;

/// <summary>
/// Performer-style linear attention (Choromanski et al., 2021): every layer's softmax attention replaced by causal
/// FAVOR+ attention with m positive random features (<see cref="FavorAttention"/>), fine-tuned from the base with
/// LoRA on q, k and v. RoPE is applied to q and k before the feature map. At inference a recurrent state
/// (sum of phi(k) v^T and sum of phi(k) per layer and kv head) reads the stream in constant memory.
/// </summary>
/// <remarks>
/// Options: rank (8), alpha (16), features (64: m), feature-seed (0: draws W, recorded in the adapter options, never
/// redrawn), range (0: 16 x the base window; the longest document / stream the method is meant for).
/// One unit per document (<see cref="DocumentLoss.Units"/> = 1). KvBytes is the state's size (float32 equivalent).
/// </remarks>
public sealed class PerformerMethod : StreamAttentionFinetuneMethod<FavorAttention>
{
    public const string MethodName = "performer";

    /// <summary>The registry entry.</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MethodName,
        "Performer: causal linear attention with FAVOR+ positive random features (RoPE before the features), LoRA q,k,v fine-tune; constant-memory recurrent session",
        OptionInfos("q, k, v",
            new("features", "64", "m: random features per head"),
            new("feature-seed", "0", "seed of the random feature matrix W (fixed for training and inference)")),
        (model, options, seed) => new PerformerMethod(model, options, seed));

    private PerformerMethod(LlamaModel baseModel, int seed, Settings settings)
        : base(MethodName, baseModel, seed, settings, ["q_proj", "k_proj", "v_proj"]) { }

    /// <summary>A fresh Performer fine-tune over <paramref name="baseModel"/> (LoRA A drawn from <paramref name="seed"/>, B = 0; W from the feature-seed option).</summary>
    /// <exception cref="MethodOptionException">An option is out of range.</exception>
    public PerformerMethod(LlamaModel baseModel, MethodOptions options, int seed) : this(baseModel, seed, Read(baseModel, options)) { }

    private static Settings Read(LlamaModel baseModel, MethodOptions options) => Read(MethodName, baseModel, options, o =>
    {
        int features = o.Int("features", 64, 1, 1 << 16);
        int featureSeed = o.Int("feature-seed", 0);
        return () => new FavorAttention(baseModel.Config.Layers, features, baseModel.Config.HeadDim, featureSeed);
    });

    protected override Var TrainingAttention(Tape tape, int layer, Var q, Var k, Var v, int tokens) => Attention.Attend(tape, layer, q, k, v);

    /// <summary>The recurrent state of a session: a constant-size state per layer and kv head.</summary>
    protected override IStreamAttentionState NewStreamState() => Attention.NewStreamState(Base.Config.KvHeads);

    public override ITrainableMethod? CreateReplica() => new PerformerMethod(Base, new MethodOptions(MethodName, Options), seed: 0);
}
