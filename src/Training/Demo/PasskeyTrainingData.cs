namespace UioLlm.Training.Demo;

/// <summary>
/// An endless stream of passkey documents for UIO training: document i is a function of (seed, i) alone.
/// Each has T whole segments of l tokens plus the final target (T drawn in [min, max]); the answer ends the
/// document, so the question and the answer are read by the last segment's decoder, while the needle ends
/// before segment T - 1 - <c>gap</c>: more than <c>gap</c> segments back, only memory can supply the key.
/// </summary>
public sealed class PasskeyTrainingData : ITargetedTrainingData
{
    private readonly PasskeyDocuments documents;
    private readonly int seed, segmentLength, minSegments, maxSegments, gap;
    private long index;

    /// <param name="gap">Segments that must lie between the needle's last segment and the question's segment.</param>
    /// <param name="answerOnly">Score only the answer (<see cref="NextWithTargets"/>); otherwise every next token.</param>
    public PasskeyTrainingData(PasskeyDocuments documents, int seed, int segmentLength, int minSegments, int maxSegments, int gap, bool answerOnly = false)
    {
        AnswerOnly = answerOnly;
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentOutOfRangeException.ThrowIfNegative(gap);
        if (minSegments < gap + 2 || maxSegments < minSegments)
            throw new ArgumentException($"PasskeyTrainingData: need {gap + 2} <= min segments ({minSegments}) <= max segments ({maxSegments}) for a gap of {gap}");
        if (documents.NeedleLength + 1 > segmentLength)
            throw new ArgumentException($"PasskeyTrainingData: a segment of {segmentLength} tokens cannot hold the needle ({documents.NeedleLength} tokens) after BOS");
        if (documents.Question.Length + documents.KeyTokens > segmentLength)
            throw new ArgumentException($"PasskeyTrainingData: a segment of {segmentLength} tokens cannot hold the question and answer");
        this.documents = documents;
        this.seed = seed;
        this.segmentLength = segmentLength;
        this.minSegments = minSegments;
        this.maxSegments = maxSegments;
        this.gap = gap;
    }

    public TrainingDataPosition Position
    {
        get => new(0, index);
        set
        {
            if (value.Epoch != 0 || value.Index < 0)
                throw new ArgumentOutOfRangeException(nameof(value), value, "PasskeyTrainingData: the stream has one endless epoch; index must be >= 0");
            index = value.Index;
        }
    }

    /// <summary>Whether only the answer is scored.</summary>
    public bool AnswerOnly { get; }

    public int[] Next() => Document(index++).Tokens;

    public (int[] Tokens, int[] Targets) NextWithTargets()
    {
        var document = Document(index++);
        var targets = document.Tokens[1..];
        if (AnswerOnly) Array.Fill(targets, Estimators.SegmentLoop.IgnoreTarget, 0, targets.Length - document.AnswerTokens);
        return (document.Tokens, targets);
    }

    /// <summary>Document <paramref name="i"/> of the stream.</summary>
    public PasskeyDocument Document(long i)
    {
        var random = new Data.SeededRandom(seed, stream: 1000 + i);
        int segments = minSegments + random.Next(maxSegments - minSegments + 1);
        int lastNeedleSegment = segments - 2 - gap;
        int maxOffset = (lastNeedleSegment + 1) * segmentLength - documents.NeedleLength;
        return documents.Random(Seeds.Derive(seed, i), segments * segmentLength + 1, 1, maxOffset, bos: true);
    }
}
