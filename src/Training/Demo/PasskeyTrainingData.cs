namespace UioLlm.Training.Demo;

/// <summary>
/// An endless stream of passkey documents for UIO training: document i is a function of (seed, i) alone. The
/// question and the answer end the document, in its last segment q; the needle lies wholly inside segment
/// q - d, where the distance d (in segments) is drawn uniformly from [<see cref="MinDistance"/>,
/// <see cref="MaxDistance"/>]; the document has d + 1 + e whole segments of l tokens plus the final target,
/// e drawn from [0, <see cref="ExtraSegments"/>] (filler segments before the needle's). With d greater than the
/// truncation window S, no truncated estimator ever sends the answer's gradient to the needle's encoder pass.
/// </summary>
public sealed class PasskeyTrainingData : ITargetedTrainingData
{
    private readonly PasskeyDocuments documents;
    private readonly int seed, segmentLength;
    private long index;

    /// <param name="answerOnly">Score only the answer (<see cref="NextWithTargets"/>); otherwise every next token.</param>
    public PasskeyTrainingData(PasskeyDocuments documents, int seed, int segmentLength, int minDistance, int maxDistance, int extraSegments = 1, bool answerOnly = true)
    {
        ArgumentNullException.ThrowIfNull(documents);
        if (minDistance < 1 || maxDistance < minDistance)
            throw new ArgumentException($"PasskeyTrainingData: need 1 <= min distance ({minDistance}) <= max distance ({maxDistance}) in segments");
        ArgumentOutOfRangeException.ThrowIfNegative(extraSegments);
        if (documents.NeedleLength + 1 > segmentLength)
            throw new ArgumentException($"PasskeyTrainingData: a segment of {segmentLength} tokens cannot hold the needle ({documents.NeedleLength} tokens) after BOS");
        if (documents.Question.Length + documents.KeyTokens > segmentLength)
            throw new ArgumentException($"PasskeyTrainingData: a segment of {segmentLength} tokens cannot hold the question and answer ({documents.Question.Length + documents.KeyTokens} tokens)");
        this.documents = documents;
        this.seed = seed;
        this.segmentLength = segmentLength;
        MinDistance = minDistance;
        MaxDistance = maxDistance;
        ExtraSegments = extraSegments;
        AnswerOnly = answerOnly;
    }

    public int MinDistance { get; }
    public int MaxDistance { get; }
    public int ExtraSegments { get; }

    /// <summary>The most whole segments a document has (its memories read by the last segment: one fewer).</summary>
    public int MaxSegments => MaxDistance + 1 + ExtraSegments;

    /// <summary>Whether only the answer is scored.</summary>
    public bool AnswerOnly { get; }

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

    public int[] Next() => Document(index++).Document.Tokens;

    public (int[] Tokens, int[] Targets) NextWithTargets()
    {
        var (document, _) = Document(index++);
        return (document.Tokens, Targets(document, AnswerOnly));
    }

    /// <summary>Next-token targets of a document: every token, or only the answer (the rest <see cref="Estimators.SegmentLoop.IgnoreTarget"/>).</summary>
    public static int[] Targets(PasskeyDocument document, bool answerOnly)
    {
        ArgumentNullException.ThrowIfNull(document);
        var targets = document.Tokens[1..];
        if (answerOnly) Array.Fill(targets, Estimators.SegmentLoop.IgnoreTarget, 0, targets.Length - document.AnswerTokens);
        return targets;
    }

    /// <summary>Document <paramref name="i"/> of the stream and its needle-to-question distance in segments.</summary>
    public (PasskeyDocument Document, int Distance) Document(long i)
    {
        var random = new Data.SeededRandom(seed, stream: 1000 + i);
        int distance = MinDistance + random.Next(MaxDistance - MinDistance + 1);
        int segments = distance + 1 + random.Next(ExtraSegments + 1);
        return (AtDistance(documents, Seeds.Derive(seed, i), segmentLength, segments, distance), distance);
    }

    /// <summary>
    /// A document of <paramref name="segments"/> whole segments plus the answer whose needle lies wholly inside
    /// segment (segments - 1 - <paramref name="distance"/>), at an offset drawn from <paramref name="seed"/>.
    /// </summary>
    public static PasskeyDocument AtDistance(PasskeyDocuments documents, long seed, int segmentLength, int segments, int distance)
    {
        ArgumentNullException.ThrowIfNull(documents);
        if (distance < 1 || distance > segments - 1)
            throw new ArgumentOutOfRangeException(nameof(distance), distance, $"PasskeyTrainingData: a needle {distance} segments before the question needs 1 <= distance <= segments - 1 = {segments - 1}");
        int needleSegment = segments - 1 - distance;
        int lo = needleSegment * segmentLength + (needleSegment == 0 ? 1 : 0);
        int hi = (needleSegment + 1) * segmentLength - documents.NeedleLength;
        var random = new Data.SeededRandom(seed, stream: 13);
        return documents.Compose(random, segments * segmentLength + 1, lo + random.Next(hi - lo + 1), bos: true);
    }
}
