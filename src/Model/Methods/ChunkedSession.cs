namespace UioLlm.Model.Methods;

/// <summary>
/// A session that reads the stream in steps of at most <see cref="Chunk"/> tokens, each step giving the logits of
/// every token of its chunk (<see cref="StepLogits"/>, supplied by the method): owns <see cref="Feed"/>,
/// <see cref="Prefill"/> (the same steps, no log-probabilities kept), <see cref="TokensSeen"/> and
/// <see cref="LastLogits"/>.
/// </summary>
public abstract class ChunkedSession : ILongContextSession
{
    private readonly int vocab;
    private float[]? lastLogits;

    /// <param name="vocab">Logits per token.</param>
    /// <param name="chunk">Most tokens per step.</param>
    protected ChunkedSession(int vocab, int chunk)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        this.vocab = vocab;
        Chunk = chunk;
    }

    /// <summary>Most tokens per step.</summary>
    public int Chunk { get; }

    /// <inheritdoc/>
    public long TokensSeen { get; private set; }

    /// <inheritdoc/>
    public ReadOnlySpan<float> LastLogits => lastLogits;

    /// <inheritdoc/>
    public abstract long KvBytes { get; }

    /// <inheritdoc/>
    public abstract bool OutOfTrainedRange { get; }

    /// <summary>
    /// One step: runs <paramref name="chunk"/> after the <see cref="TokensSeen"/> tokens read so far, keeping what the
    /// method keeps of them, and returns the logits of every token of the chunk, [chunk.Length * vocab] row-major.
    /// </summary>
    protected abstract float[] StepLogits(ReadOnlySpan<int> chunk);

    /// <inheritdoc/>
    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        var logProbs = new double[tokens.Length];
        Run(tokens, logProbs);
        return logProbs;
    }

    /// <inheritdoc/>
    public void Prefill(ReadOnlySpan<int> tokens) => Run(tokens, null);

    private void Run(ReadOnlySpan<int> tokens, double[]? logProbs)
    {
        for (int done = 0; done < tokens.Length;)
        {
            int take = Math.Min(Chunk, tokens.Length - done);
            var chunk = tokens.Slice(done, take);
            float[] rows = StepLogits(chunk);
            TokensSeen += take;
            if (logProbs is not null) LogProbs.OfChunk(lastLogits, rows, vocab, chunk, logProbs.AsSpan(done, take));
            lastLogits = rows.AsSpan(rows.Length - vocab, vocab).ToArray();
            done += take;
        }
    }

    /// <inheritdoc/>
    public abstract void Dispose();
}
