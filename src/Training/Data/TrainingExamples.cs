namespace UioLlm.Training.Data;

/// <summary>
/// One training example: T segments of l tokens plus the shifted target, i.e. T*l + 1 consecutive tokens
/// of one document (what <c>IGradientEstimator.Accumulate</c> reads).
/// </summary>
/// <param name="Index">Its position in <see cref="TrainingExamples"/>.</param>
/// <param name="Source">The document it was cut from.</param>
/// <param name="Start">Offset of its first token in that document.</param>
/// <param name="Segments">T.</param>
/// <param name="Tokens">The T*l + 1 tokens.</param>
public readonly record struct Example(int Index, string Source, int Start, int Segments, ReadOnlyMemory<int> Tokens);

/// <summary>
/// A corpus cut into examples of l-token segments. A document of n tokens has S = (n - 1) / l whole
/// segments (each with its next-token target); one with S &lt; 2 is skipped (<see cref="SkippedShort"/>). A
/// longer one is cut into ceil(S / maxSegments) examples of nearly equal size (sizes differ by at most one
/// segment, none above maxSegments); the last token of an example is the first of the next. Only with
/// maxSegments = 2 can a piece of one segment arise; such pieces are dropped (<see cref="DroppedSegments"/>)
/// because a single segment exercises no memory.
/// </summary>
public sealed class TrainingExamples
{
    private readonly List<(int Document, int Start, int Segments)> examples = [];
    private readonly TokenizedCorpus corpus;

    /// <summary>Cuts <paramref name="corpus"/> into examples.</summary>
    /// <param name="corpus">The tokenized documents.</param>
    /// <param name="segmentLength">l, tokens per segment (the UIO config's segment length).</param>
    /// <param name="maxSegments">Most segments per example (at least 2).</param>
    public TrainingExamples(TokenizedCorpus corpus, int segmentLength, int maxSegments)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentOutOfRangeException.ThrowIfLessThan(segmentLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSegments, 2);
        this.corpus = corpus;
        SegmentLength = segmentLength;
        MaxSegments = maxSegments;
        for (int d = 0; d < corpus.Documents.Count; d++) Cut(d);
    }

    /// <summary>l.</summary>
    public int SegmentLength { get; }

    /// <summary>Most segments per example.</summary>
    public int MaxSegments { get; }

    /// <summary>Number of examples.</summary>
    public int Count => examples.Count;

    /// <summary>Documents shorter than 2*l + 1 tokens, left out.</summary>
    public int SkippedShort { get; private set; }

    /// <summary>Single-segment pieces left out (only with maxSegments = 2).</summary>
    public int DroppedSegments { get; private set; }

    /// <summary>Segments over all examples.</summary>
    public long TotalSegments { get; private set; }

    /// <summary>Example <paramref name="index"/>.</summary>
    public Example this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            var (document, start, segments) = examples[index];
            var source = corpus.Documents[document];
            return new Example(index, source.Source, start, segments, source.Ids.AsMemory(start, segments * SegmentLength + 1));
        }
    }

    private void Cut(int document)
    {
        int segments = (corpus.Documents[document].Ids.Length - 1) / SegmentLength;
        if (segments < 2)
        {
            SkippedShort++;
            return;
        }
        int pieces = (segments + MaxSegments - 1) / MaxSegments;
        int start = 0;
        for (int p = 0; p < pieces; p++)
        {
            // Spread the remainder over the first pieces so sizes differ by at most one.
            int size = segments / pieces + (p < segments % pieces ? 1 : 0);
            if (size < 2) DroppedSegments += size;
            else
            {
                examples.Add((document, start * SegmentLength, size));
                TotalSegments += size;
            }
            start += size;
        }
    }
}
