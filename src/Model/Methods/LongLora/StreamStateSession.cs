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
public sealed class StreamStateSession : ChunkedSession
{
    private readonly FinetunedLlama model;
    private readonly IStreamAttentionState state;

    /// <param name="model">The fine-tuned model (not owned).</param>
    /// <param name="state">The per-layer attention state (owned by the session).</param>
    /// <param name="trainedRange">Stream lengths the fine-tune is meant for.</param>
    /// <param name="chunk">Most tokens per step.</param>
    public StreamStateSession(FinetunedLlama model, IStreamAttentionState state, long trainedRange, int chunk = 256)
        : base(Checked(model, state, trainedRange).Config.VocabSize, chunk)
    {
        this.model = model;
        this.state = state;
        TrainedRange = trainedRange;
    }

    /// <summary>The constructor's checks that come before the chunk's (model, state, then range).</summary>
    private static FinetunedLlama Checked(FinetunedLlama model, IStreamAttentionState state, long trainedRange)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentOutOfRangeException.ThrowIfLessThan(trainedRange, 1);
        return model;
    }

    /// <summary>The stream length from which a read counts as an extrapolation.</summary>
    public long TrainedRange { get; }

    /// <inheritdoc/>
    public override long KvBytes => state.Bytes;

    /// <inheritdoc/>
    public override bool OutOfTrainedRange => TokensSeen > TrainedRange;

    /// <inheritdoc/>
    protected override float[] StepLogits(ReadOnlySpan<int> chunk)
    {
        using var tape = new Tape(model.Base.Accelerator, nameof(StreamStateSession));
        using var _ = tape.NoGrad();
        return model.Logits(tape, chunk, state.Attend, checked((int)TokensSeen)).Value.ToArray();
    }

    /// <inheritdoc/>
    public override void Dispose() { }
}
