using UioLlm.Model.Uio;

namespace UioLlm.Training.Estimators;

/// <summary>What an estimator did: encoder passes, graphs alive at once, memory held by live tapes.</summary>
public sealed class EstimatorCounters
{
    public long EncoderForwards { get; internal set; }
    public long EncoderBackwards { get; internal set; }
    public long DecoderForwards { get; internal set; }
    /// <summary>Most encoder graphs (tapes) alive at the same moment.</summary>
    public int PeakLiveGraphs { get; internal set; }
    /// <summary>Most bytes held at once by live encoder tapes.</summary>
    public long PeakTapeBytes { get; internal set; }

    public void Reset()
    {
        EncoderForwards = EncoderBackwards = DecoderForwards = 0;
        PeakLiveGraphs = 0;
        PeakTapeBytes = 0;
    }

    public override string ToString() =>
        $"encoder forwards {EncoderForwards}, encoder backwards {EncoderBackwards}, decoder forwards {DecoderForwards}, peak live graphs {PeakLiveGraphs}, peak tape bytes {PeakTapeBytes}";
}

/// <summary>The result of one document's segment loop.</summary>
/// <param name="Loss">sum over segments of the decoder loss J_t.</param>
/// <param name="Segments">T, the segments the document was cut into.</param>
/// <param name="Tokens">Tokens whose prediction was scored (positions with target -100 are not).</param>
/// <param name="ScoredSegments">Segments with at least one scored target (all T unless targets were masked).</param>
public readonly record struct EstimateResult(double Loss, int Segments, int Tokens, int ScoredSegments);

/// <summary>
/// A gradient estimator for UIO training (UIO.md section 2): runs the segment loop over one document and
/// ADDS its estimate of d(sum_t J_t)/dTheta into the gradients of the model's trainable parameters
/// (encoder LoRA, transfer LoRA, memory embedding). Callers zero the gradients between optimizer steps.
/// </summary>
public interface IGradientEstimator
{
    string Name { get; }

    EstimatorCounters Counters { get; }

    /// <summary>
    /// One document: its first T*l + 1 tokens form T segments of l tokens (targets shifted by one);
    /// the decoder reads segment t after the memories of segments 0..t-1.
    /// </summary>
    EstimateResult Accumulate(UioModel model, ReadOnlySpan<int> document);

    /// <summary>
    /// As <see cref="Accumulate(UioModel, ReadOnlySpan{int})"/>, with explicit targets: targets[i] is what
    /// document[i] must predict (document.Length - 1 of them; -100 leaves a position unscored, e.g. to score
    /// only an answer). J_t is the mean over segment t's scored positions (0 when it has none).
    /// </summary>
    EstimateResult Accumulate(UioModel model, ReadOnlySpan<int> document, ReadOnlySpan<int> targets);
}
