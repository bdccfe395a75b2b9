using UioLlm.Kernels;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

namespace UioLlm.Training.Methods;

/// <summary>
/// LongLoRA (Chen et al., 2023): fine-tuning with shifted sparse attention (S2-Attn) and LoRA+ (LoRA on q, k, v, o
/// plus trainable RMSNorm gains and token embeddings); full attention at inference through the fine-tuned weights.
/// Optionally with Position Interpolation (<c>scale</c> &gt; 1, as in the paper) to read past the base window.
/// </summary>
/// <remarks>
/// S2-Attn in training: the input is cut into groups of <see cref="GroupSize"/> tokens (default a quarter of the
/// document's input length); the first half of the query heads attends causally within its group, the second half
/// within groups shifted by half a group (<see cref="AttentionMask.BlockDiagonal"/> with shifted upper heads). The
/// shifted groups do not wrap around: the original implementation rolls the shifted heads' tokens by half a group,
/// which puts the first half-group into the last group, where causal attention would let it read the document's
/// end; here those tokens form a group of their own. When one group covers the whole input there is no neighbour to
/// shift towards and the layer attends in full (causally). Local layers of the base (LlamaConfig.LocalLayers) keep
/// their window. One unit per document (<see cref="DocumentLoss.Units"/> = 1).
/// Options: rank (8), alpha (16), group (0: a quarter of each document), scale (1: the base RoPE; s &gt; 1:
/// RoPE scaled by s, trained range s x window), rope (pi: Position Interpolation as in the paper; yarn; ntk: how
/// scale applies), plus (yes: LoRA+; no: LoRA only).
/// </remarks>
public sealed class LongLoraMethod : FinetuneMethod
{
    public const string MethodName = "longlora";

    /// <summary>The registry entry (registered by the lead with <see cref="TrainableMethods.Register"/>).</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new(MethodName,
        "LongLoRA: LoRA+ (q,k,v,o LoRA, trainable norms and embeddings) fine-tuned with shifted sparse attention (S2-Attn); full attention at inference",
        [
            new("rank", "8", "LoRA rank on q, k, v, o"),
            new("alpha", "16", "LoRA alpha (update scaled by alpha / rank)"),
            new("group", "0", "S2-Attn group size in tokens; 0: a quarter of each document's length"),
            new("scale", "1", "RoPE scale s to read past the base window (trained range s x the window); 1: the base RoPE"),
            new("rope", "pi", "how scale > 1 scales RoPE: pi (Position Interpolation, as in the paper) | yarn | ntk"),
            new("plus", "yes", "yes: train the RMSNorm gains and token embeddings too (LoRA+); no: LoRA only"),
        ],
        (model, options, seed) => new LongLoraMethod(model, options, seed));

    private LongLoraMethod(LlamaModel baseModel, MethodOptions options, int seed, Settings settings)
        : base(MethodName, new FinetunedLlama(baseModel, settings.Rope, settings.Rank, settings.Alpha, settings.Plus, seed), settings.Resolved, settings.Range)
    {
        GroupSize = settings.Group;
        Scale = settings.Scale;
    }

    /// <summary>A fresh LongLoRA over <paramref name="baseModel"/> (LoRA A drawn from <paramref name="seed"/>, B = 0, norms and embedding copied from the base).</summary>
    /// <exception cref="MethodOptionException">An option is out of range.</exception>
    public LongLoraMethod(LlamaModel baseModel, MethodOptions options, int seed) : this(baseModel, options, seed, Read(baseModel, options)) { }

    /// <summary>The configured group size (0: a quarter of each document's input length).</summary>
    public int GroupSize { get; }

    /// <summary>The RoPE scale (1: the base RoPE).</summary>
    public double Scale { get; }

    private sealed record Settings(int Rank, float Alpha, int Group, double Scale, bool Plus, RopeTable Rope, long Range, IReadOnlyDictionary<string, string> Resolved);

    private static Settings Read(LlamaModel baseModel, MethodOptions options)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        int rank = options.Int("rank", 8, 1);
        double alpha = options.Double("alpha", 16, 1e-6, 1e6);
        int group = options.Int("group", 0, 0);
        if (group == 1) throw new MethodOptionException($"method '{MethodName}': option group must be 0 (a quarter of each document) or at least 2 (half of it shifts), got 1");
        double scale = options.Double("scale", 1, 1, 1e6);
        var kind = options.Choice("rope", "pi", "pi", "yarn", "ntk") switch
        {
            "yarn" => RopeScalingKind.Yarn,
            "ntk" => RopeScalingKind.NtkAware,
            _ => RopeScalingKind.Linear,
        };
        bool plus = options.Choice("plus", "yes", "yes", "no") == "yes";
        RopeTable rope;
        try
        {
            rope = scale == 1 ? baseModel.Rope : RopeScalingMethods.Scaled(baseModel, kind, scale);
        }
        catch (NotSupportedException e)
        {
            throw new MethodOptionException($"method '{MethodName}': option scale={scale.ToString(System.Globalization.CultureInfo.InvariantCulture)}: {e.Message}");
        }
        long range = (long)Math.Min(int.MaxValue, Math.Floor(scale * baseModel.Config.MaxSeqLen));
        return new Settings(rank, (float)alpha, group, scale, plus, rope, range, new Dictionary<string, string>(options.Resolved));
    }

    /// <summary>The S2-Attn group for an input of <paramref name="tokens"/> tokens: the option, or a quarter of the input (at least 2).</summary>
    public int GroupFor(int tokens) => GroupSize > 0 ? GroupSize : Math.Max(2, tokens / 4);

    /// <summary>
    /// S2-Attn: causal within groups of <see cref="GroupFor"/> tokens, the upper half of the query heads on groups
    /// shifted by half a group; plain causal attention when one group covers the input; a local layer keeps its window.
    /// </summary>
    public override AttentionMask TrainingMask(int layer, int tokens)
    {
        var c = Base.Config;
        if (c.IsLocal(layer)) return c.DecoderMask(layer);
        int group = GroupFor(tokens);
        return group >= tokens ? AttentionMask.CausalMask() : AttentionMask.BlockDiagonal(group, causal: true, shiftUpperHalfHeads: true);
    }

    public override ITrainableMethod? CreateReplica() =>
        new LongLoraMethod(Base, new MethodOptions(MethodName, Options), seed: 0);
}
