using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// Full attention over the whole stream through a fine-tune's weights (<see cref="FinetunedLlama"/>: LongLoRA's
/// LoRA + norms + embedding, or a RoPE-scaling fine-tune): every token is kept, keys rotated with the fine-tune's
/// table at their stream positions. The session reads the fine-tune's parameters as they are at each step (do not
/// change them while a stream is being read). <see cref="ILongContextSession.OutOfTrainedRange"/> is set once a
/// query reads a key at distance &gt;= <see cref="TrainedRange"/>.
/// </summary>
public sealed class FinetunedSession : ChunkedSession
{
    private readonly FinetunedLlama model;
    private readonly KvCache cache;

    /// <param name="model">The fine-tuned model (not owned).</param>
    /// <param name="trainedRange">Query-key distances the fine-tune is meant for (e.g. factor x the base window).</param>
    /// <param name="chunk">Most tokens per step.</param>
    public FinetunedSession(FinetunedLlama model, long trainedRange, int chunk = 256)
        : base(Checked(model, trainedRange).Config.VocabSize, chunk)
    {
        this.model = model;
        TrainedRange = trainedRange;
        cache = model.Base.NewCache(Math.Max(16, Math.Min(model.Config.MaxSeqLen, 4096)));
    }

    /// <summary>The constructor's checks that come before the chunk's (model, then range).</summary>
    private static FinetunedLlama Checked(FinetunedLlama model, long trainedRange)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(trainedRange, 1);
        return model;
    }

    /// <summary>The distance from which a read counts as an extrapolation.</summary>
    public long TrainedRange { get; }

    /// <summary>The largest query-key distance read so far.</summary>
    public long MaxDistance { get; private set; }

    /// <inheritdoc/>
    public override long KvBytes => cache.StoredBytes;

    /// <inheritdoc/>
    public override bool OutOfTrainedRange => MaxDistance >= TrainedRange;

    /// <inheritdoc/>
    protected override float[] StepLogits(ReadOnlySpan<int> chunk)
    {
        float[] rows;
        using (var tape = new Tape(model.Base.Accelerator, nameof(FinetunedSession)))
            rows = model.Step(tape, chunk, cache).Value.ToArray();
        MaxDistance = Math.Max(MaxDistance, cache.Length - 1);
        return rows;
    }

    /// <inheritdoc/>
    public override void Dispose() => cache.Dispose();
}
