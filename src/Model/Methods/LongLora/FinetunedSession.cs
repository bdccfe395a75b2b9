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
public sealed class FinetunedSession : ILongContextSession
{
    private readonly FinetunedLlama model;
    private readonly KvCache cache;
    private float[]? lastLogits;

    /// <param name="model">The fine-tuned model (not owned).</param>
    /// <param name="trainedRange">Query-key distances the fine-tune is meant for (e.g. factor x the base window).</param>
    /// <param name="chunk">Most tokens per step.</param>
    public FinetunedSession(FinetunedLlama model, long trainedRange, int chunk = 256)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(trainedRange, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        this.model = model;
        TrainedRange = trainedRange;
        Chunk = chunk;
        cache = model.Base.NewCache(Math.Max(16, Math.Min(model.Config.MaxSeqLen, 4096)));
    }

    /// <summary>The distance from which a read counts as an extrapolation.</summary>
    public long TrainedRange { get; }
    public int Chunk { get; }

    /// <summary>The largest query-key distance read so far.</summary>
    public long MaxDistance { get; private set; }

    public long TokensSeen { get; private set; }
    public long KvBytes => cache.StoredBytes;
    public ReadOnlySpan<float> LastLogits => lastLogits;
    public bool OutOfTrainedRange => MaxDistance >= TrainedRange;

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
            using (var tape = new Tape(model.Base.Accelerator, nameof(FinetunedSession)))
                rows = model.Step(tape, chunk, cache).Value.ToArray();
            TokensSeen += take;
            MaxDistance = Math.Max(MaxDistance, cache.Length - 1);
            if (logProbs is not null) LogProbs.OfChunk(lastLogits, rows, vocab, chunk, logProbs.AsSpan(done, take));
            lastLogits = rows.AsSpan(rows.Length - vocab, vocab).ToArray();
            done += take;
        }
    }

    public void Dispose() => cache.Dispose();
}
