using UioLlm.Model.Autograd;

namespace UioLlm.Model.Methods;

/// <summary>
/// A trained <see cref="MemorizingModel"/> reading a stream of any length: tokens are grouped into segments of l;
/// every token is predicted from its segment so far (causal) plus the kNN memory of all completed segments, exactly
/// as <see cref="MemorizingModel.Segment"/> computes it in training. A partial segment is re-read when more of it
/// arrives (at most l tokens per pass); a completed one is appended to the memory.
/// </summary>
public sealed class MemorizingSession : ILongContextSession
{
    private readonly MemorizingModel model;
    private readonly KnnMemory memory;
    private readonly List<int> segment = [];
    private float[] lastLogits = [];
    private long seen;

    public MemorizingSession(MemorizingModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        this.model = model;
        memory = model.NewMemory();
    }

    /// <summary>Rows in the kNN memory (tokens of completed segments).</summary>
    public int MemoryRows => memory.Rows;

    public ReadOnlySpan<float> LastLogits => lastLogits;
    public long TokensSeen => seen;

    /// <summary>The memory's keys and values plus the current segment's (memory layer counted once per layer read).</summary>
    public long KvBytes => memory.Bytes + 2L * 4 * segment.Count * model.Base.Config.KvDim * model.Base.Config.Layers;

    /// <summary>Never set: local attention stays within a segment and memory keys carry no positions.</summary>
    public bool OutOfTrainedRange => false;

    public double[] Feed(ReadOnlySpan<int> tokens) => Read(tokens, scoring: true);

    public void Prefill(ReadOnlySpan<int> tokens) => Read(tokens, scoring: false);

    private double[] Read(ReadOnlySpan<int> tokens, bool scoring)
    {
        var result = new double[scoring ? tokens.Length : 0];
        int l = model.Config.SegmentLength, vocab = model.Base.Config.VocabSize, done = 0;
        while (done < tokens.Length)
        {
            if (segment.Count == l) Complete();
            int take = Math.Min(tokens.Length - done, l - segment.Count);
            int before = segment.Count;
            segment.AddRange(tokens.Slice(done, take).ToArray());
            using var tape = new Tape(model.Base.Accelerator, $"{model.Config.Method} session");
            using var noGrad = tape.NoGrad();
            var hidden = model.Segment(tape, segment.ToArray(), memory, out _, out _);
            var logits = model.Base.Head.Forward(tape, hidden).Value.ToArray();
            for (int i = 0; i < take; i++)
            {
                int row = before + i;   // segment row of the token being scored
                if (!scoring) continue;
                if (row == 0) result[done + i] = seen + i == 0 ? double.NaN : LogProbs.At(lastLogits, tokens[done + i]);
                else result[done + i] = LogProbs.At(logits.AsSpan((row - 1) * vocab, vocab), tokens[done + i]);
            }
            lastLogits = logits.AsSpan((segment.Count - 1) * vocab, vocab).ToArray();
            seen += take;
            done += take;
        }
        return result;
    }

    /// <summary>Appends the completed segment's memory-layer pairs to the memory and starts a new segment.</summary>
    private void Complete()
    {
        using var tape = new Tape(model.Base.Accelerator, $"{model.Config.Method} session memory");
        using var noGrad = tape.NoGrad();
        model.Segment(tape, segment.ToArray(), memory, out var kv, out _);
        memory.Add(kv.RawKeys.Value, kv.Values.Value);
        segment.Clear();
    }

    public void Dispose() { }
}
