using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Methods.AutoCompressor;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Methods.AutoCompressor;

/// <summary>
/// AutoCompressor as a trainable method (<c>uio train --method autocompressor:segment=..:summary=..:rank=..:alpha=..:bptt=..</c>).
/// A document's tokens that predict something (document[0 .. n-2]) are cut into segments of <c>segment</c>; segment i
/// is read after the summary vectors of segments 0 .. i-1 (<see cref="AutoCompressorModel.SegmentPass"/>) and its
/// token rows predict the targets at their positions. Loss: per segment the mean cross-entropy of its scored targets,
/// summed over segments; Units = segments with a scored target. Gradients: one tape per document; segment i's loss
/// reaches the summaries of the <c>bptt</c> segments before it (and through them everything those passes read);
/// older summaries are read as detached copies (stop-gradient). With bptt = 1 (default) a segment trains the
/// compression of the segment right before it; -1 backpropagates through every summary. Trained: the summary-token
/// embeddings (no weight decay) and LoRA on q, k, v, o of every layer (weight decay).
/// </summary>
public sealed class AutoCompressorMethod : ITrainableMethod
{
    /// <summary>The registry entry (name "autocompressor").</summary>
    public static TrainableMethodDescriptor Descriptor { get; } = new("autocompressor",
        "AutoCompressor: kappa summary tokens per segment, their last-layer outputs accumulated as soft prompts for later segments; LoRA on q,k,v,o",
        [
            new("segment", "window/2", "tokens per segment"),
            new("summary", "min(50, window/16)", "kappa: summary tokens (and vectors) per segment"),
            new("rank", "16", "LoRA rank on q, k, v, o"),
            new("alpha", "32", "LoRA alpha (scale alpha/rank)"),
            new("bptt", "1", "segments back through which a loss reaches earlier summaries (older ones detached); -1: all"),
        ],
        (baseModel, options, seed) => new AutoCompressorMethod(baseModel, AutoCompressorConfig.From(options, baseModel.Config), seed));

    private readonly AdamWParameter[] parameters;

    /// <summary>A fresh method (LoRA A and the summary embeddings drawn from <paramref name="seed"/>, every B zero).</summary>
    public AutoCompressorMethod(LlamaModel baseModel, AutoCompressorConfig config, int seed = 0)
    {
        Model = new AutoCompressorModel(baseModel, config, seed);
        parameters = [.. Model.Parameters().Select(p => new AdamWParameter(p, Decay: p != Model.SummaryEmbedding))];
    }

    public string Name => Descriptor.Name;
    public LlamaModel Base => Model.Base;
    public AutoCompressorModel Model { get; }
    public AutoCompressorConfig Config => Model.Config;
    public IReadOnlyList<AdamWParameter> Parameters => parameters;

    public DocumentLoss Accumulate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int seed) => Run(document, targets, backward: true);

    /// <summary>The document's loss without gradients (the same forward as <see cref="Accumulate"/>).</summary>
    public DocumentLoss Evaluate(ReadOnlySpan<int> document, ReadOnlySpan<int> targets) => Run(document, targets, backward: false);

    private DocumentLoss Run(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, bool backward)
    {
        CompressionDocuments.Check(Name, document, targets);
        int inputs = document.Length - 1, s = Config.Segment, kappa = Config.Summary;
        int segments = (inputs + s - 1) / s;
        using var tape = new Tape(Model.Accelerator, "autocompressor");
        using var noGrad = backward ? default(Tape.NoGradScope?) : tape.NoGrad();
        var summaries = new List<Var>(segments);
        var detached = new List<Var>();
        try
        {
            Var? total = null;
            double loss = 0;
            int units = 0, tokens = 0;
            for (int i = 0; i < segments; i++)
            {
                int start = i * s, n = Math.Min(s, inputs - start);
                var read = new List<Var>(i);
                for (int j = 0; j < i; j++)
                {
                    if (Config.Bptt == -1 || i - j <= Config.Bptt || !backward) read.Add(summaries[j]);
                    else
                    {
                        var copy = summaries[j].DetachAsLeaf(requiresGrad: false);
                        detached.Add(copy);
                        read.Add(copy);
                    }
                }
                bool last = i == segments - 1;
                var pass = Model.SegmentPass(tape, read.Count == 0 ? null : tape.ConcatRows(read), document.Slice(start, n), withSummaryTokens: !last);
                int p = i * kappa;
                if (!last) summaries.Add(tape.SliceRows(pass, p + n, kappa));
                var segmentTargets = targets.Slice(start, n);
                int scored = CompressionDocuments.Scored(segmentTargets);
                if (scored == 0) continue;
                var segmentLoss = Model.Loss(tape, tape.SliceRows(pass, p, n), segmentTargets);
                loss += segmentLoss.Value.ToArray()[0];
                units++;
                tokens += scored;
                total = total is null ? segmentLoss : tape.Add(total, segmentLoss);
            }
            if (backward && total is not null && total.RequiresGrad) tape.Backward(total);
            return new DocumentLoss(loss, units, tokens);
        }
        finally
        {
            foreach (var d in detached) d.DisposeLeaf();
        }
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, Name, Config.ToOptions(), Model.Parameters().Select(p => (p.Name!, p.Value)), baseModelNameOrPath, Base.Config);

    public void LoadAdapter(string folder) =>
        TrainableMethods.LoadAdapter(folder, Name, Config.ToOptions(), Model.Parameters().Select(p => (p.Name!, p.Value)));

    public ITrainableMethod? CreateReplica() => new AutoCompressorMethod(Base, Config);

    public ILongContextSession OpenSession() => new AutoCompressorSession(Model);

    public void Dispose() => Model.Dispose();
}
