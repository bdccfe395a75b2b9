using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods;

/// <summary>
/// What LongLoRA and the RoPE-scaling fine-tunes share: a <see cref="FinetunedLlama"/> (LoRA on q, k, v, o, and
/// for LoRA+ the norms and embedding) trained by next-token cross-entropy over whole documents, its adapter
/// files, replicas, and a full-attention inference session through the fine-tuned weights. A subclass chooses the
/// RoPE table, the trained range and each layer's attention mask in training.
/// </summary>
/// <remarks>
/// A document of N tokens is read as inputs document[0..N-1) at positions 0..N-2 predicting targets[0..N-1)
/// (-100: unscored); its loss is the mean cross-entropy of its scored targets, one unit per document
/// (<see cref="DocumentLoss.Units"/> = 1). The pass has no randomness, so the seed of <see cref="Accumulate"/> is unused.
/// </remarks>
public abstract class FinetuneMethod : ITrainableMethod
{
    /// <summary>
    /// The "range" option of the methods that read a stream with their own attention (LongNet, Performer): the longest
    /// document or stream the method is meant for; 0 resolves to 16 x the base window, 1 is refused.
    /// </summary>
    protected static long ReadRange(string method, LlamaModel baseModel, MethodOptions options)
    {
        int range = options.Int("range", 0, 0);
        if (range == 1) throw new MethodOptionException($"method '{method}': option range must be 0 (16 x the window) or at least 2, got 1");
        return range == 0 ? Math.Min(int.MaxValue, 16L * baseModel.Config.MaxSeqLen) : range;
    }

    private readonly AdamWParameter[] adamParameters;
    private readonly Dictionary<string, string> options;

    /// <param name="name">The registry name.</param>
    /// <param name="model">The fine-tune's parameters over the base (owned).</param>
    /// <param name="options">The resolved options (everything needed to rebuild the method).</param>
    /// <param name="trainedRange">The longest document input (and query-key distance + 1) the method is trained for.</param>
    protected FinetuneMethod(string name, FinetunedLlama model, IReadOnlyDictionary<string, string> options, long trainedRange)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(trainedRange, 2);
        Name = name;
        Model = model;
        TrainedRange = trainedRange;
        this.options = new Dictionary<string, string>(options, StringComparer.Ordinal);
        adamParameters = model.Parameters.Select(p => new AdamWParameter(p.Parameter, p.Decay)).ToArray();
    }

    public string Name { get; }
    public LlamaModel Base => Model.Base;

    /// <summary>The fine-tune's parameters and forward.</summary>
    public FinetunedLlama Model { get; }

    /// <summary>The resolved options, as recorded in the adapter.</summary>
    public IReadOnlyDictionary<string, string> Options => options;

    /// <summary>Query-key distances the method is trained for: longer documents are refused, a session reading farther marks itself out of range.</summary>
    public long TrainedRange { get; }

    public IReadOnlyList<AdamWParameter> Parameters => adamParameters;

    /// <summary>The attention mask of layer <paramref name="layer"/> when training on <paramref name="tokens"/> input tokens.</summary>
    public abstract AttentionMask TrainingMask(int layer, int tokens);

    /// <summary>
    /// Layer <paramref name="layer"/>'s attention in training over an input of <paramref name="tokens"/> tokens
    /// (queries at positions 0..): by default the engine's softmax under <see cref="TrainingMask"/>; a method with an
    /// attention of its own (dilated, kernelised) overrides it.
    /// </summary>
    protected virtual Var TrainingAttention(Tape tape, int layer, Var q, Var k, Var v, int tokens) =>
        tape.Attention(q, k, v, TrainingMask(layer, tokens));

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed)
    {
        int scored = CheckDocument(document, targets);
        var ids = document[..^1];
        int tokens = ids.Length;
        using var tape = new Tape(Base.Accelerator, Name);
        var loss = Model.Loss(tape, ids, targets, (t, l, q, k, v, _) => TrainingAttention(t, l, q, k, v, tokens));
        tape.Backward(loss);
        return new DocumentLoss(loss.Value.ToArray()[0], 1, scored);
    }

    /// <summary>The mean next-token cross-entropy of a document under the training masks, without gradients (evaluation of the training objective).</summary>
    public double Loss(ReadOnlySpan<int> document, ReadOnlySpan<int> targets)
    {
        CheckDocument(document, targets);
        var ids = document[..^1];
        int tokens = ids.Length;
        using var tape = new Tape(Base.Accelerator, Name);
        using var _ = tape.NoGrad();
        return Model.Loss(tape, ids, targets, (t, l, q, k, v, _) => TrainingAttention(t, l, q, k, v, tokens)).Value.ToArray()[0];
    }

    /// <summary>Checks a document and its targets; returns how many targets are scored.</summary>
    private int CheckDocument(ReadOnlySpan<int> document, ReadOnlySpan<int> targets)
    {
        if (document.Length < 2)
            throw new ArgumentException($"{Name}: a document needs at least 2 tokens (one input, one target), got {document.Length}", nameof(document));
        if (targets.Length != document.Length - 1)
            throw new ArgumentException($"{Name}: {targets.Length} targets for a document of {document.Length} tokens; expected {document.Length - 1}", nameof(targets));
        if (document.Length - 1 > TrainedRange)
            throw new ArgumentException($"{Name}: a document of {document.Length} tokens is longer than the method's trained range of {TrainedRange} input tokens (raise its factor / scale)", nameof(document));
        int vocab = Base.Config.VocabSize, scored = 0;
        for (int i = 0; i < document.Length; i++)
            if ((uint)document[i] >= (uint)vocab)
                throw new ArgumentException($"{Name}: document token {i} is {document[i]}, outside the vocabulary [0, {vocab})", nameof(document));
        for (int i = 0; i < targets.Length; i++)
        {
            if (targets[i] == -100) continue;
            if ((uint)targets[i] >= (uint)vocab)
                throw new ArgumentException($"{Name}: target {i} is {targets[i]}, outside the vocabulary [0, {vocab}) and not -100", nameof(targets));
            scored++;
        }
        if (scored == 0) throw new ArgumentException($"{Name}: the document has no scored target (every target is -100)", nameof(targets));
        return scored;
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, Name, options, Model.Parameters.Select(p => (p.Name, p.Parameter.Value)), baseModelNameOrPath, Base.Config);

    public void LoadAdapter(string folder) =>
        TrainableMethods.LoadAdapter(folder, Name, options, Model.Parameters.Select(p => (p.Name, p.Parameter.Value)));

    public abstract ITrainableMethod? CreateReplica();

    /// <summary>Full attention over the stream through the current weights and the method's RoPE table.</summary>
    public virtual ILongContextSession OpenSession() => new FinetunedSession(Model, TrainedRange);

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (disposing) Model.Dispose();
    }
}
