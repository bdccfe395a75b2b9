using UioLlm.Kernels;
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
public sealed class PerformerMethod : FinetuneMethod
{
    public const string MethodName = "performer";

    /// <summary>The registry entry.</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MethodName,
        "Performer: causal linear attention with FAVOR+ positive random features (RoPE before the features), LoRA q,k,v fine-tune; constant-memory recurrent session",
        [
            new("rank", "8", "LoRA rank on q, k, v"),
            new("alpha", "16", "LoRA alpha (update scaled by alpha / rank)"),
            new("features", "64", "m: random features per head"),
            new("feature-seed", "0", "seed of the random feature matrix W (fixed for training and inference)"),
            new("range", "0", "longest document / stream the method is meant for; 0: 16 x the base window"),
        ],
        (model, options, seed) => new PerformerMethod(model, options, seed));

    private PerformerMethod(LlamaModel baseModel, int seed, Settings settings)
        : base(MethodName, new FinetunedLlama(baseModel, baseModel.Rope, settings.Rank, settings.Alpha, false, seed, ["q_proj", "k_proj", "v_proj"]), settings.Resolved, settings.Range)
    {
        Attention = settings.Attention;
    }

    /// <summary>A fresh Performer fine-tune over <paramref name="baseModel"/> (LoRA A drawn from <paramref name="seed"/>, B = 0; W from the feature-seed option).</summary>
    /// <exception cref="MethodOptionException">An option is out of range.</exception>
    public PerformerMethod(LlamaModel baseModel, MethodOptions options, int seed) : this(baseModel, seed, Read(baseModel, options)) { }

    /// <summary>The feature maps of every layer.</summary>
    public FavorAttention Attention { get; }

    private sealed record Settings(int Rank, float Alpha, FavorAttention Attention, long Range, IReadOnlyDictionary<string, string> Resolved);

    private static Settings Read(LlamaModel baseModel, MethodOptions options)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        int rank = options.Int("rank", 8, 1);
        double alpha = options.Double("alpha", 16, 1e-6, 1e6);
        int features = options.Int("features", 64, 1, 1 << 16);
        int featureSeed = options.Int("feature-seed", 0);
        long resolvedRange = ReadRange(MethodName, baseModel, options);
        var c = baseModel.Config;
        return new Settings(rank, (float)alpha, new FavorAttention(c.Layers, features, c.HeadDim, featureSeed), resolvedRange, new Dictionary<string, string>(options.Resolved));
    }

    /// <summary>Causal (the kernelised attention is not a mask; <see cref="TrainingAttention"/> computes it).</summary>
    public override AttentionMask TrainingMask(int layer, int tokens) => AttentionMask.CausalMask();

    protected override Var TrainingAttention(Tape tape, int layer, Var q, Var k, Var v, int tokens) => Attention.Attend(tape, layer, q, k, v);

    /// <summary>The recurrent session: a constant-size state per layer and kv head.</summary>
    public override ILongContextSession OpenSession() => new StreamStateSession(Model, Attention.NewStreamState(Base.Config.KvHeads), TrainedRange);

    public override ITrainableMethod? CreateReplica() => new PerformerMethod(Base, new MethodOptions(MethodName, Options), seed: 0);
}
