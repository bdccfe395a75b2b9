namespace UioLlm.Model.Methods;

/// <summary>Log-probabilities from logits, accumulated in double: the scoring helper every method shares.</summary>
public static class LogProbs
{
    /// <summary>log softmax(logits)[index].</summary>
    public static double At(ReadOnlySpan<float> logits, int index)
    {
        if ((uint)index >= (uint)logits.Length)
            throw new ArgumentOutOfRangeException(nameof(index), $"LogProbs.At: token {index} is outside the {logits.Length} logits");
        float max = float.NegativeInfinity;
        foreach (float v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp(v - max);
        double result = logits[index] - max - Math.Log(sum);
        if (!double.IsFinite(result)) NonFiniteException.ThrowIfAny(logits, "scoring a token");
        return result;
    }

    /// <summary>
    /// For a chunk whose logits rows [T, vocab] were computed after each of its tokens: the log-probability of
    /// every token of the chunk, the first one from <paramref name="before"/> (the logits before the chunk;
    /// NaN when empty), written into <paramref name="output"/>.
    /// </summary>
    public static void OfChunk(ReadOnlySpan<float> before, ReadOnlySpan<float> rows, int vocab, ReadOnlySpan<int> chunk, Span<double> output)
    {
        for (int t = 0; t < chunk.Length; t++)
        {
            ReadOnlySpan<float> previous = t == 0 ? before : rows.Slice((t - 1) * vocab, vocab);
            output[t] = previous.IsEmpty ? double.NaN : At(previous, chunk[t]);
        }
    }

    /// <summary>exp(-mean) over the finite entries (NaN when there are none).</summary>
    public static double Perplexity(ReadOnlySpan<double> logProbs)
    {
        double sum = 0;
        int count = 0;
        foreach (double v in logProbs)
            if (double.IsFinite(v)) { sum += v; count++; }
        return count == 0 ? double.NaN : Math.Exp(-sum / count);
    }
}
