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
/// summed over segments; Units = segments with a scored target. Gradients (truncated backpropagation through the
/// summaries): segment i's loss is differentiated through its own pass and the passes of segments i-bptt .. i-1,
/// with the summaries of segments before i-bptt held constant (stop-gradient). bptt = 1 (default): a segment's loss
/// trains its own pass and the compression of the segment right before it, and reaches nothing older; -1 (or any
/// depth covering the document): full backpropagation through every summary, on one tape. Trained: the
/// summary-token embeddings (no weight decay) and LoRA on q, k, v, o of every layer (weight decay).
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
        int inputs = document.Length - 1, s = Config.Segment;
        int segments = (inputs + s - 1) / s;
        return !backward || Config.Bptt == -1 || Config.Bptt >= segments - 1
            ? WholeDocument(document, targets, segments, backward)
            : Truncated(document, targets, segments);
    }

    /// <summary>One tape over every segment, every summary read as computed (full backpropagation), or no gradient at all.</summary>
    private DocumentLoss WholeDocument(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int segments, bool backward)
    {
        int inputs = document.Length - 1, s = Config.Segment, kappa = Config.Summary;
        using var tape = new Tape(Model.Accelerator, "autocompressor");
        using var noGrad = backward ? default(Tape.NoGradScope?) : tape.NoGrad();
        var summaries = new List<Var>(segments);
        var total = new LossSum(tape);
        for (int i = 0; i < segments; i++)
        {
            int start = i * s, n = Math.Min(s, inputs - start);
            bool last = i == segments - 1;
            var pass = Model.SegmentPass(tape, summaries.Count == 0 ? null : tape.ConcatRows(summaries), document.Slice(start, n), withSummaryTokens: !last);
            if (!last) summaries.Add(tape.SliceRows(pass, i * kappa + n, kappa));
            total.Add(Model, tape.SliceRows(pass, i * kappa, n), targets.Slice(start, n));
        }
        if (backward) total.Backward();
        return total.Result;
    }

    /// <summary>
    /// Truncated backpropagation (1 &lt;= bptt &lt; segments - 1): one tape per segment i, which re-runs the passes of
    /// segments i-bptt .. i-1 from the constant summaries of the segments before them, then segment i, and
    /// backpropagates segment i's loss. The forward values are those of <see cref="WholeDocument"/>; memory holds
    /// bptt + 1 passes at a time; the cost is bptt + 1 forward passes per segment.
    /// </summary>
    private DocumentLoss Truncated(ReadOnlySpan<int> document, ReadOnlySpan<int> targets, int segments)
    {
        int inputs = document.Length - 1, s = Config.Segment, kappa = Config.Summary, depth = Config.Bptt;
        var constants = new List<Kernels.Tensor>(segments);
        double loss = 0;
        int units = 0, tokens = 0;
        try
        {
            for (int i = 0; i < segments; i++)
            {
                using var tape = new Tape(Model.Accelerator, "autocompressor");
                int first = Math.Max(0, i - depth);
                var reads = new List<Var>(i);
                for (int j = 0; j < first; j++) reads.Add(Var.Constant(constants[j]));
                for (int j = first; j < i; j++)
                {
                    int n = Math.Min(s, inputs - j * s);
                    var earlier = Model.SegmentPass(tape, reads.Count == 0 ? null : tape.ConcatRows(reads), document.Slice(j * s, n), withSummaryTokens: true);
                    reads.Add(tape.SliceRows(earlier, j * kappa + n, kappa));
                }
                int start = i * s, count = Math.Min(s, inputs - start);
                bool last = i == segments - 1;
                var pass = Model.SegmentPass(tape, reads.Count == 0 ? null : tape.ConcatRows(reads), document.Slice(start, count), withSummaryTokens: !last);
                if (!last)
                {
                    var value = Model.Accelerator.Allocate([kappa, Base.Config.Dim], "autocompressor.summary");
                    Model.Accelerator.Kernels.Copy(pass.Value.Slice(i * kappa + count, kappa), value);
                    constants.Add(value);
                }
                var segmentLoss = new LossSum(tape);
                segmentLoss.Add(Model, tape.SliceRows(pass, i * kappa, count), targets.Slice(start, count));
                segmentLoss.Backward();
                loss += segmentLoss.Result.Loss;
                units += segmentLoss.Result.Units;
                tokens += segmentLoss.Result.Tokens;
            }
            return new DocumentLoss(loss, units, tokens);
        }
        finally
        {
            foreach (var c in constants) c.Dispose();
        }
    }

    /// <summary>The sum of segment losses on one tape (segments with nothing scored are skipped).</summary>
    private sealed class LossSum(Tape tape)
    {
        private Var? total;
        private double loss;
        private int units, tokens;

        public void Add(AutoCompressorModel model, Var tokenRows, ReadOnlySpan<int> targets)
        {
            int scored = CompressionDocuments.Scored(targets);
            if (scored == 0) return;
            var segmentLoss = model.Loss(tape, tokenRows, targets);
            loss += segmentLoss.Value.ToArray()[0];
            units++;
            tokens += scored;
            total = total is null ? segmentLoss : tape.Add(total, segmentLoss);
        }

        public void Backward()
        {
            if (total is not null && total.RequiresGrad) tape.Backward(total);
        }

        public DocumentLoss Result => new(loss, units, tokens);
    }

    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        TrainableMethods.SaveAdapter(folder, Name, Config.ToOptions(), Model.Parameters().Select(p => (p.Name!, p.Value)), baseModelNameOrPath, Base.Config);

    public void LoadAdapter(string folder) =>
        TrainableMethods.LoadAdapter(folder, Name, Config.ToOptions(), Model.Parameters().Select(p => (p.Name!, p.Value)));

    public ITrainableMethod? CreateReplica() => new AutoCompressorMethod(Base, Config);

    public ILongContextSession OpenSession() => new AutoCompressorSession(Model);

    public void Dispose() => Model.Dispose();
}
