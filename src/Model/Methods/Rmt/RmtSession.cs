using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// An <see cref="RmtModel"/> reading a stream of any length at inference, segment by segment, with the model's
/// current parameters: each segment's read memory is run first (its keys and values cached), then the segment's
/// tokens as they are fed (any pieces; each sees the memory and the tokens before it), and when the next segment
/// begins the write rows are run over the whole segment to give the new memory. The logits of every token are
/// those of <see cref="RmtModel.Segment"/> over the same segment (the write rows come after every ordinary token
/// under the causal mask, so they change no logit of their own segment).
/// </summary>
public sealed class RmtSession : ILongContextSession
{
    private readonly RmtModel model;
    private readonly KvCache cache;          // [memory ; tokens of the current segment], keys rotated at their row
    private readonly Tensor memory;          // the memory the current (or next) segment reads
    private float[]? lastLogits;
    private int inSegment;                   // tokens of the current segment read so far
    private bool memoryRead;                 // the current segment's read rows are in the cache

    public RmtSession(RmtModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        this.model = model;
        var c = model.Base.Config;
        int n = model.Config.MemoryTokens;
        cache = model.Base.NewCache(2 * n + model.Config.SegmentLength);
        memory = model.Base.Accelerator.Allocate([n, c.Dim], "rmt.session.memory");
        model.Base.Accelerator.Kernels.Copy(model.Memory.Value, memory);
    }

    public long TokensSeen { get; private set; }

    public long KvBytes => 2L * model.Base.Config.Layers * cache.Length * model.Base.Config.KvDim * sizeof(float) + (long)memory.Length * sizeof(float);

    public ReadOnlySpan<float> LastLogits => lastLogits;

    /// <summary>Never: every segment reads positions 0 .. l + 2n - 1, inside the base's window by <see cref="RmtConfig.Validate"/>.</summary>
    public bool OutOfTrainedRange => false;

    /// <summary>Segments completed so far (memories written).</summary>
    public int SegmentsWritten { get; private set; }

    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        var logProbs = new double[tokens.Length];
        Run(tokens, logProbs);
        return logProbs;
    }

    public void Prefill(ReadOnlySpan<int> tokens) => Run(tokens, null);

    private void Run(ReadOnlySpan<int> tokens, double[]? logProbs)
    {
        int l = model.Config.SegmentLength, vocab = model.Base.Config.VocabSize;
        for (int done = 0; done < tokens.Length;)
        {
            if (inSegment == l) WriteMemory();
            if (!memoryRead) ReadMemory();
            int take = Math.Min(tokens.Length - done, l - inSegment);
            var chunk = tokens.Slice(done, take);
            var rows = Step(chunk, logProbs is not null);
            if (logProbs is not null) LogProbs.OfChunk(lastLogits, rows, vocab, chunk, logProbs.AsSpan(done, take));
            lastLogits = rows.AsSpan(rows.Length - vocab, vocab).ToArray();
            inSegment += take;
            TokensSeen += take;
            done += take;
        }
    }

    /// <summary>Runs the read memory rows (positions 0 .. n-1) into the empty cache.</summary>
    private void ReadMemory()
    {
        using var tape = new Tape(model.Base.Accelerator, nameof(RmtSession));
        using var _ = tape.NoGrad();
        Forward(tape, Var.Constant(memory));
        memoryRead = true;
    }

    /// <summary>Runs the write rows over the completed segment, keeps their last-layer states as the next memory, empties the cache.</summary>
    private void WriteMemory()
    {
        using var tape = new Tape(model.Base.Accelerator, nameof(RmtSession));
        using var _ = tape.NoGrad();
        var written = Forward(tape, Var.Constant(memory));
        model.Base.Accelerator.Kernels.Copy(written.Value, memory);
        cache.Clear();
        inSegment = 0;
        memoryRead = false;
        SegmentsWritten++;
    }

    /// <summary>Tokens after what the cache holds: returns their logits (all rows, or the last one).</summary>
    private float[] Step(ReadOnlySpan<int> chunk, bool allLogits)
    {
        using var tape = new Tape(model.Base.Accelerator, nameof(RmtSession));
        using var _ = tape.NoGrad();
        var x = Forward(tape, model.Base.Embed(tape, chunk));
        var hidden = model.Base.FinalNorm.Forward(tape, allLogits ? x : tape.SliceRows(x, chunk.Length - 1, 1));
        return model.Base.Head.Forward(tape, hidden).Value.ToArray();
    }

    /// <summary>Input rows x [T, dim] after the cached rows, at the next positions: appends their keys and values, returns the last block's output.</summary>
    private Var Forward(Tape tape, Var x)
    {
        var c = model.Base.Config;
        var kernels = model.Base.Accelerator.Kernels;
        int start = cache.Length, rows = x.Value.Dim(0);
        cache.EnsureRoom(rows);
        var positions = new int[rows];
        for (int i = 0; i < rows; i++) positions[i] = start + i;
        for (int layer = 0; layer < c.Layers; layer++)
        {
            KvPrefix? front = start == 0 ? null
                : new KvPrefix(Var.Constant(cache.Keys(layer).Slice(0, start)), Var.Constant(cache.Values(layer).Slice(0, start)));
            x = model.Lora.Block(tape, layer, x, positions, front, c.DecoderMask(layer), out var kv);
            kernels.Copy(kv.Keys.Value, cache.Keys(layer).Slice(start, rows));
            kernels.Copy(kv.Values.Value, cache.Values(layer).Slice(start, rows));
        }
        cache.Advance(rows);
        return x;
    }

    public void Dispose()
    {
        cache.Dispose();
        memory.Dispose();
    }
}
