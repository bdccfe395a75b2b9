using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

namespace UioLlm.Training.Methods;

/// <summary>
/// What the fine-tunes with an attention of their own share (LongNet's dilated attention, Performer's linear
/// attention): a LoRA fine-tune from the base (the base's RoPE table, no LoRA+), every layer's attention in training
/// computed by the method under a causal mask, and a stream read at inference by a <see cref="StreamStateSession"/>
/// over the method's per-layer state. Options: rank (8), alpha (16), the method's own, range (see <see cref="FinetuneMethod.ReadRange"/>).
/// </summary>
/// <typeparam name="TAttention">The method's attention (the same for training and inference).</typeparam>
public abstract class StreamAttentionFinetuneMethod<TAttention> : FinetuneMethod where TAttention : class
{
    /// <summary>The options a method is built from, read by <see cref="Read"/>.</summary>
    /// <param name="Rank">LoRA rank.</param>
    /// <param name="Alpha">LoRA alpha.</param>
    /// <param name="Attention">The method's attention.</param>
    /// <param name="Range">The resolved trained range.</param>
    /// <param name="Resolved">The resolved options, as recorded in the adapter.</param>
    protected sealed record Settings(int Rank, float Alpha, TAttention Attention, long Range, IReadOnlyDictionary<string, string> Resolved);

    /// <param name="name">The registry name.</param>
    /// <param name="baseModel">The base model (not owned).</param>
    /// <param name="seed">Seed of the LoRA A matrices (B = 0).</param>
    /// <param name="settings">The options, read by <see cref="Read"/>.</param>
    /// <param name="loraTargets">The projections that get LoRA (e.g. q_proj, v_proj).</param>
    protected StreamAttentionFinetuneMethod(string name, LlamaModel baseModel, int seed, Settings settings, string[] loraTargets)
        : base(name, new FinetunedLlama(baseModel, baseModel.Rope, settings.Rank, settings.Alpha, false, seed, loraTargets), settings.Resolved, settings.Range)
    {
        Attention = settings.Attention;
    }

    /// <summary>The method's attention of every layer (LongNet's dilated pattern, Performer's feature maps).</summary>
    public TAttention Attention { get; }

    /// <summary>
    /// The option entries of the registry: rank (LoRA on <paramref name="loraOn"/>), alpha, the method's own
    /// <paramref name="own"/>, range.
    /// </summary>
    protected static MethodOptionInfo[] OptionInfos(string loraOn, params MethodOptionInfo[] own) =>
    [
        new("rank", "8", $"LoRA rank on {loraOn}"),
        new("alpha", "16", "LoRA alpha (update scaled by alpha / rank)"),
        .. own,
        new("range", "0", "longest document / stream the method is meant for; 0: 16 x the base window"),
    ];

    /// <summary>
    /// Reads the options in their order: rank, alpha, the method's own (<paramref name="readAttention"/>, which
    /// returns how to build the attention once every option is read), range.
    /// </summary>
    /// <exception cref="MethodOptionException">An option is out of range.</exception>
    protected static Settings Read(string method, LlamaModel baseModel, MethodOptions options, Func<MethodOptions, Func<TAttention>> readAttention)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(options);
        int rank = options.Int("rank", 8, 1);
        double alpha = options.Double("alpha", 16, 1e-6, 1e6);
        var attention = readAttention(options);
        long resolvedRange = ReadRange(method, baseModel, options);
        return new Settings(rank, (float)alpha, attention(), resolvedRange, new Dictionary<string, string>(options.Resolved));
    }

    /// <summary>Causal (the method's attention is not a mask the kernels know; <see cref="FinetuneMethod.TrainingAttention"/> computes it).</summary>
    public override AttentionMask TrainingMask(int layer, int tokens) => AttentionMask.CausalMask();

    /// <summary>A fresh per-layer attention state for a session.</summary>
    protected abstract IStreamAttentionState NewStreamState();

    /// <summary>The method's attention over the stream (<see cref="NewStreamState"/>), marked out of range past <see cref="FinetuneMethod.TrainedRange"/>.</summary>
    public override ILongContextSession OpenSession() => new StreamStateSession(Model, NewStreamState(), TrainedRange);
}
