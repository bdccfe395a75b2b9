using UioLlm.Model.Autograd;

namespace UioLlm.Model.Methods;

/// <summary>What a <see cref="StreamStateSession"/> keeps per layer of the tokens read so far (a cache, a recurrent state).</summary>
public interface IStreamAttentionState
{
    /// <summary>Layer <paramref name="layer"/>'s attention of the new tokens (queries, keys, values at positions <paramref name="start"/>..), updating what is kept.</summary>
    Var Attend(Tape tape, int layer, Var q, Var k, Var v, int start);

    /// <summary>Bytes held for the tokens read so far.</summary>
    long Bytes { get; }
}

/// <summary>
/// A stream read through a fine-tune's weights (<see cref="FinetunedLlama"/>) whose attention keeps its own state
/// (<see cref="IStreamAttentionState"/>: a dilated-attention key/value cache, a linear-attention recurrent state).
/// <see cref="ILongContextSession.OutOfTrainedRange"/> is set once the stream is longer than <see cref="TrainedRange"/>.
/// </summary>
public sealed class StreamStateSession : ILongContextSession
{
    private readonly FinetunedLlama model;
    private readonly IStreamAttentionState state;
    private float[]? lastLogits;

    /// <param name="model">The fine-tuned model (not owned).</param>
    /// <param name="state">The per-layer attention state (owned by the session).</param>
    /// <param name="trainedRange">Stream lengths the fine-tune is meant for.</param>
    /// <param name="chunk">Most tokens per step.</param>
    public StreamStateSession(FinetunedLlama model, IStreamAttentionState state, long trainedRange, int chunk = 256)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentOutOfRangeException.ThrowIfLessThan(trainedRange, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        this.model = model;
        this.state = state;
        TrainedRange = trainedRange;
        Chunk = chunk;
    }

    /// <summary>The stream length from which a read counts as an extrapolation.</summary>
    public long TrainedRange { get; }
    public int Chunk { get; }
    public long TokensSeen { get; private set; }
    public long KvBytes => state.Bytes;
    public ReadOnlySpan<float> LastLogits => lastLogits;
    public bool OutOfTrainedRange => TokensSeen > TrainedRange;

    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        var logProbs = new double[tokens.Length];
        Run(tokens, logProbs);
        return logProbs;
    }

    public void Prefill(ReadOnlySpan<int> tokens) => Run(tokens, null);

    private void Run(ReadOnlySpan<int> tokens, double[]? logProbs)
    {
        int vocab = model.Config.VocabSize;
        for (int done = 0; done < tokens.Length;)
        {
            int take = Math.Min(Chunk, tokens.Length - done);
            var chunk = tokens.Slice(done, take);
            float[] rows;
            using (var tape = new Tape(model.Base.Accelerator, nameof(StreamStateSession)))
            using (tape.NoGrad())
                rows = model.Logits(tape, chunk, state.Attend, checked((int)TokensSeen)).Value.ToArray();
            TokensSeen += take;
            if (logProbs is not null) LogProbs.OfChunk(lastLogits, rows, vocab, chunk, logProbs.AsSpan(done, take));
            lastLogits = rows.AsSpan(rows.Length - vocab, vocab).ToArray();
            done += take;
        }
    }

    public void Dispose() { }
}
