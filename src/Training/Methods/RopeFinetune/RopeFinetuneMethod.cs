using UioLlm.Kernels;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

namespace UioLlm.Training.Methods;

/// <summary>Which RoPE scaling a <see cref="RopeFinetuneMethod"/> fine-tunes under.</summary>
public enum RopeFinetuneScaling
{
    /// <summary>Position Interpolation: every frequency divided by the factor ("pi-finetune").</summary>
    Pi,
    /// <summary>YaRN: per-frequency ramp between interpolation and extrapolation, attention temperature ("yarn-finetune").</summary>
    Yarn,
    /// <summary>Adjusted base frequency (Llama 2 Long): a raised RoPE base ("abf-finetune").</summary>
    Abf,
}

/// <summary>
/// LoRA fine-tuning of the base under a scaled RoPE (PI, YaRN, or ABF's raised base) on long documents with full
/// (causal) attention; inference is the same scaled RoPE with the LoRA weights, full attention over the stream.
/// Three registry names, one per scaling: "pi-finetune", "yarn-finetune", "abf-finetune" (<see cref="PiFinetune"/>,
/// <see cref="YarnFinetune"/>, <see cref="AbfFinetune"/>). The RoPE tables are the inference methods' own
/// (<see cref="RopeScalingMethods"/>), so a fresh fine-tune (LoRA B = 0) is exactly the "pi" / "yarn" / "abf" method.
/// </summary>
/// <remarks>
/// Options: rank (8), alpha (16), factor (8: the context the fine-tune is for, as a multiple of the base window;
/// PI's and YaRN's scale s; for ABF only the trained range), yarn: beta-fast (32), beta-slow (1); abf: theta
/// (50 x the base's RoPE base, e.g. 10,000 -> 500,000). LoRA sits on q, k, v, o; norms and embeddings stay frozen.
/// Documents up to factor x window input tokens; one unit per document.
/// </remarks>
public sealed class RopeFinetuneMethod : FinetuneMethod
{
    private RopeFinetuneMethod(string name, RopeFinetuneScaling scaling, LlamaModel baseModel, int seed, Settings settings)
        : base(name, new FinetunedLlama(baseModel, settings.Rope, settings.Rank, settings.Alpha, trainNormsAndEmbedding: false, seed), settings.Resolved, settings.Range)
    {
        Scaling = scaling;
        Factor = settings.Factor;
    }

    /// <summary>A fresh fine-tune under <paramref name="scaling"/> (LoRA A drawn from <paramref name="seed"/>, B = 0).</summary>
    /// <exception cref="MethodOptionException">An option is out of range.</exception>
    public RopeFinetuneMethod(RopeFinetuneScaling scaling, LlamaModel baseModel, MethodOptions options, int seed)
        : this(NameOf(scaling), scaling, baseModel, seed, Read(scaling, baseModel, options)) { }

    /// <summary>The scaling fine-tuned under.</summary>
    public RopeFinetuneScaling Scaling { get; }

    /// <summary>The target context as a multiple of the base window (PI's and YaRN's scale).</summary>
    public double Factor { get; }

    /// <summary>The registry name of a scaling: pi-finetune, yarn-finetune, abf-finetune.</summary>
    public static string NameOf(RopeFinetuneScaling scaling) => scaling switch
    {
        RopeFinetuneScaling.Pi => "pi-finetune",
        RopeFinetuneScaling.Yarn => "yarn-finetune",
        RopeFinetuneScaling.Abf => "abf-finetune",
        _ => throw new ArgumentOutOfRangeException(nameof(scaling), scaling, "unknown RoPE fine-tune scaling"),
    };

    /// <summary>The three registry entries.</summary>
    public static IReadOnlyList<TrainableMethodDescriptor> Descriptors => [PiFinetune.Descriptor, YarnFinetune.Descriptor, AbfFinetune.Descriptor];

    internal static TrainableMethodDescriptor DescriptorOf(RopeFinetuneScaling scaling)
    {
        var options = new List<MethodOptionInfo>
        {
            new("rank", "8", "LoRA rank on q, k, v, o"),
            new("alpha", "16", "LoRA alpha (update scaled by alpha / rank)"),
            new("factor", "8", scaling == RopeFinetuneScaling.Abf
                ? "context trained for, as a multiple of the base window (documents up to factor x window)"
                : "scale s, and the context trained for (documents up to s x window)"),
        };
        if (scaling == RopeFinetuneScaling.Yarn)
        {
            options.Add(new("beta-fast", "32", "ramp start (rotations)"));
            options.Add(new("beta-slow", "1", "ramp end (rotations)"));
        }
        if (scaling == RopeFinetuneScaling.Abf) options.Add(new("theta", "50 x the model's base", "the raised RoPE base (e.g. 500000)"));
        string summary = scaling switch
        {
            RopeFinetuneScaling.Pi => "Position Interpolation fine-tuned: LoRA (q,k,v,o) trained under RoPE frequencies divided by the factor; full attention",
            RopeFinetuneScaling.Yarn => "YaRN fine-tuned: LoRA (q,k,v,o) trained under YaRN-scaled RoPE; full attention",
            _ => "adjusted base frequency (Llama 2 Long) fine-tuned: LoRA (q,k,v,o) trained under a raised RoPE base; full attention",
        };
        return new TrainableMethodDescriptor(NameOf(scaling), summary, options, (model, o, seed) => new RopeFinetuneMethod(scaling, model, o, seed));
    }

    private sealed record Settings(int Rank, float Alpha, double Factor, RopeTable Rope, long Range, IReadOnlyDictionary<string, string> Resolved);

    private static Settings Read(RopeFinetuneScaling scaling, LlamaModel baseModel, MethodOptions options)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        int rank = options.Int("rank", 8, 1);
        double alpha = options.Double("alpha", 16, 1e-6, 1e6);
        double factor = options.Double("factor", 8, 1, 1e6);
        RopeTable rope;
        try
        {
            rope = Table(scaling, baseModel, options, factor);
        }
        catch (NotSupportedException e)
        {
            throw new MethodOptionException($"method '{NameOf(scaling)}': {e.Message}");
        }
        long range = (long)Math.Min(int.MaxValue, Math.Floor(factor * baseModel.Config.MaxSeqLen));
        return new Settings(rank, (float)alpha, factor, rope, range, new Dictionary<string, string>(options.Resolved));
    }

    /// <summary>The inference method's table: <see cref="RopeScalingMethods.Scaled"/> (PI, YaRN) or <see cref="RopeScalingMethods.RaisedBase"/> (ABF).</summary>
    private static RopeTable Table(RopeFinetuneScaling scaling, LlamaModel baseModel, MethodOptions options, double factor)
    {
        switch (scaling)
        {
            case RopeFinetuneScaling.Pi:
                return RopeScalingMethods.Scaled(baseModel, RopeScalingKind.Linear, factor);
            case RopeFinetuneScaling.Yarn:
                double fast = options.Double("beta-fast", 32, 0), slow = options.Double("beta-slow", 1, 0);
                return RopeScalingMethods.Scaled(baseModel, RopeScalingKind.Yarn, factor, 0, fast, slow);
            case RopeFinetuneScaling.Abf:
                double theta = options.Double("theta", 50.0 * baseModel.Config.RopeTheta, 1.0000001);
                return RopeScalingMethods.RaisedBase(baseModel, theta);
            default:
                throw new ArgumentOutOfRangeException(nameof(scaling), scaling, "unknown RoPE fine-tune scaling");
        }
    }

    /// <summary>Full causal attention (a local layer of the base keeps its window).</summary>
    public override AttentionMask TrainingMask(int layer, int tokens) => Base.Config.DecoderMask(layer);

    public override ITrainableMethod? CreateReplica() =>
        new RopeFinetuneMethod(Scaling, Base, new MethodOptions(Name, Options), seed: 0);
}

/// <summary>"pi-finetune": LoRA fine-tuning under Position Interpolation (<see cref="RopeFinetuneMethod"/>).</summary>
public static class PiFinetune
{
    public static TrainableMethodDescriptor Descriptor { get; } = RopeFinetuneMethod.DescriptorOf(RopeFinetuneScaling.Pi);
}

/// <summary>"yarn-finetune": LoRA fine-tuning under YaRN (<see cref="RopeFinetuneMethod"/>).</summary>
public static class YarnFinetune
{
    public static TrainableMethodDescriptor Descriptor { get; } = RopeFinetuneMethod.DescriptorOf(RopeFinetuneScaling.Yarn);
}

/// <summary>"abf-finetune": LoRA fine-tuning under a raised RoPE base (<see cref="RopeFinetuneMethod"/>).</summary>
public static class AbfFinetune
{
    public static TrainableMethodDescriptor Descriptor { get; } = RopeFinetuneMethod.DescriptorOf(RopeFinetuneScaling.Abf);
}
