using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// The shared engine of the cache-based methods over a frozen <see cref="LlamaModel"/>: each layer's keys are
/// stored un-rotated with their values, one row per kept token, together with the token's stream position, so
/// a method decides freely which rows it keeps (<see cref="Prepare"/>), at which positions keys and queries
/// are rotated and what each query sees (<see cref="Attend"/>). The default attention rotates every kept key
/// at its row index in the store and the queries after them, under the layer's decoder mask: full attention,
/// a recomputed window, and Transformer-XL recurrence differ only in what they keep.
/// </summary>
public abstract class KvStreamSession : ILongContextSession
{
    private Tensor[] keys;
    private Tensor[] values;
    private int[] rowPositions;
    private int[] rowTokens;
    private float[]? lastLogits;

    protected KvStreamSession(LlamaModel model, int initialRows)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.IsTrainable) throw new ArgumentException($"{GetType().Name}: the method runs over a frozen base model; this one is trainable", nameof(model));
        Model = model;
        var c = model.Config;
        int rows = Math.Max(16, initialRows);
        keys = new Tensor[c.Layers];
        values = new Tensor[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            keys[l] = model.Accelerator.Allocate([rows, c.KvHeads, c.HeadDim], $"{GetType().Name}.{l}.k");
            values[l] = model.Accelerator.Allocate([rows, c.KvHeads, c.HeadDim], $"{GetType().Name}.{l}.v");
        }
        rowPositions = new int[rows];
        rowTokens = new int[rows];
    }

    public LlamaModel Model { get; }
    protected LlamaConfig Config => Model.Config;
    protected Accelerator Accelerator => Model.Accelerator;

    /// <summary>Rows (tokens) kept now.</summary>
    public int Length { get; private set; }

    public long TokensSeen { get; private set; }

    public long KvBytes => 2L * Config.Layers * Length * Config.KvDim * sizeof(float);

    public ReadOnlySpan<float> LastLogits => lastLogits;

    /// <summary>The largest query-key distance read so far (in stream positions, as the method places them).</summary>
    public long MaxDistance { get; protected set; }

    /// <summary>The largest distance the method was trained (or set) for; long.MaxValue when it has no limit.</summary>
    public virtual long TrainedRange => Config.MaxSeqLen;

    public bool OutOfTrainedRange => MaxDistance >= TrainedRange;

    /// <summary>Stream position of kept row <paramref name="row"/>.</summary>
    protected int RowPosition(int row) => rowPositions[row];

    /// <summary>Token id of kept row <paramref name="row"/>.</summary>
    protected int RowToken(int row) => rowTokens[row];

    /// <summary>Un-rotated keys of a layer, rows [0, Length + new tokens) during a step.</summary>
    protected Tensor KeysOf(int layer) => keys[layer];

    protected Tensor ValuesOf(int layer) => values[layer];

    /// <summary>
    /// Called before each step with the tokens still to feed (>= 1): evict or rebuild rows as the method
    /// requires, and return how many tokens the next step runs (1..remaining).
    /// </summary>
    protected abstract int Prepare(int remaining);

    /// <summary>The RoPE table of the next step (<paramref name="streamLength"/> = tokens seen once the step is done).</summary>
    protected virtual RopeTable TableFor(long streamLength) => Model.Rope;

    /// <summary>
    /// Attention of one layer: queries qRaw [T, Hq, D] (un-rotated) of the last T rows against rows [0, rows)
    /// of <see cref="KeysOf"/> / <see cref="ValuesOf"/>; returns o [T, Hq, D]. Default: keys rotated at their
    /// row index, queries at rows - T + t, the layer's causal decoder mask.
    /// </summary>
    protected virtual Var Attend(Tape tape, int layer, Var qRaw, int rows, RopeTable table)
    {
        int tokens = qRaw.Value.Dim(0);
        var positions = new int[rows];
        for (int i = 0; i < rows; i++) positions[i] = i;
        var q = tape.Rope(qRaw, positions.AsSpan(rows - tokens), table);
        var rotated = tape.Rent([rows, Config.KvHeads, Config.HeadDim], "kv.rotated");
        Accelerator.Kernels.Rope(keys[layer].Slice(0, rows), rotated, positions, table);
        NoteDistance(rows - 1);
        return tape.Attention(q, Var.Constant(rotated), Var.Constant(values[layer].Slice(0, rows)), Config.DecoderMask(layer));
    }

    /// <summary>
    /// One attention projection (q, k or v: <paramref name="projection"/> is the base's own) of layer
    /// <paramref name="layer"/>'s normed input x [T, dim]. Default: the base's projection; a trained method adds its
    /// adapter here (Transformer-XL's LoRA on q and v).
    /// </summary>
    protected virtual Var Project(Tape tape, int layer, Linear projection, Var x) => projection.Forward(tape, x);

    /// <summary>Records a query-key distance the method used (for <see cref="OutOfTrainedRange"/>).</summary>
    protected void NoteDistance(long distance) => MaxDistance = Math.Max(MaxDistance, distance);

    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        var logProbs = new double[tokens.Length];
        Run(tokens, logProbs);
        return logProbs;
    }

    public void Prefill(ReadOnlySpan<int> tokens) => Run(tokens, null);

    private void Run(ReadOnlySpan<int> tokens, double[]? logProbs)
    {
        for (int done = 0; done < tokens.Length;)
        {
            int take = Prepare(tokens.Length - done);
            if (take < 1 || take > tokens.Length - done)
                throw new InvalidOperationException($"{GetType().Name}: Prepare returned {take} tokens for {tokens.Length - done} remaining (internal error)");
            var chunk = tokens.Slice(done, take);
            var rows = Step(chunk, logProbs is not null);
            int vocab = Config.VocabSize;
            if (logProbs is not null) LogProbs.OfChunk(lastLogits, rows, vocab, chunk, logProbs.AsSpan(done, take));
            lastLogits = rows.AsSpan(rows.Length - vocab, vocab).ToArray();
            done += take;
        }
    }

    /// <summary>
    /// Runs tokens through the model appending them as rows, without keeping logits: for methods that rebuild
    /// their store (a recomputed window). Stream counters do not move: the tokens were seen before.
    /// </summary>
    protected void Replay(ReadOnlySpan<int> tokens, ReadOnlySpan<int> positions)
    {
        long seen = TokensSeen;
        for (int done = 0; done < tokens.Length; done += 256)
        {
            int take = Math.Min(256, tokens.Length - done);
            Step(tokens.Slice(done, take), false, positions.Slice(done, take));
        }
        TokensSeen = seen;
    }

    /// <summary>Forgets every row (the stream counters stay).</summary>
    protected void ClearRows() => Length = 0;

    /// <summary>Drops rows [from, from + count), moving the later rows up.</summary>
    protected void EvictRows(int from, int count)
    {
        if (count <= 0) return;
        if (from < 0 || from + count > Length) throw new ArgumentOutOfRangeException(nameof(count), $"{GetType().Name}: cannot evict rows [{from}, {from + count}) of {Length}");
        int after = Length - from - count;
        for (int l = 0; l < keys.Length; l++)
        {
            TensorRows.Move(keys[l], from + count, from, after);
            TensorRows.Move(values[l], from + count, from, after);
        }
        Array.Copy(rowPositions, from + count, rowPositions, from, after);
        Array.Copy(rowTokens, from + count, rowTokens, from, after);
        Length -= count;
    }

    /// <summary>One step over a chunk: appends its rows, runs every layer, returns logits (all rows, or the last).</summary>
    private float[] Step(ReadOnlySpan<int> chunk, bool allLogits, ReadOnlySpan<int> positions = default)
    {
        int tokens = chunk.Length, rows = Length + tokens;
        EnsureRows(rows);
        for (int t = 0; t < tokens; t++)
        {
            rowPositions[Length + t] = positions.IsEmpty ? checked((int)(TokensSeen + t)) : positions[t];
            rowTokens[Length + t] = chunk[t];
        }
        var c = Config;
        var table = TableFor(TokensSeen + tokens);
        var kernels = Accelerator.Kernels;
        using var tape = new Tape(Accelerator, GetType().Name);
        using var _ = tape.NoGrad();
        var x = Model.Embed(tape, chunk);
        for (int layer = 0; layer < c.Layers; layer++)
        {
            var block = Model.Blocks[layer];
            var attention = block.Attention;
            var normed = block.AttentionNorm.Forward(tape, x);
            var q = tape.Reshape(Project(tape, layer, attention.Q, normed), tokens, c.Heads, c.HeadDim);
            kernels.Copy(Project(tape, layer, attention.K, normed).Value, keys[layer].Slice(Length, tokens));
            kernels.Copy(Project(tape, layer, attention.V, normed).Value, values[layer].Slice(Length, tokens));
            var o = Attend(tape, layer, q, rows, table);
            x = tape.Add(x, attention.O.Forward(tape, tape.Reshape(o, tokens, c.Heads * c.HeadDim)));
            x = tape.Add(x, block.Mlp.Forward(tape, block.FfnNorm.Forward(tape, x)));
        }
        Length = rows;
        TokensSeen += tokens;
        var hidden = Model.FinalNorm.Forward(tape, allLogits ? x : tape.SliceRows(x, tokens - 1, 1));
        return Model.Head.Forward(tape, hidden).Value.ToArray();
    }

    private void EnsureRows(int rows)
    {
        if (rows <= rowPositions.Length) return;
        int grown = Math.Max(rows, 2 * rowPositions.Length);
        for (int l = 0; l < keys.Length; l++)
        {
            keys[l] = TensorRows.Grow(keys[l], grown, Length);
            values[l] = TensorRows.Grow(values[l], grown, Length);
        }
        Array.Resize(ref rowPositions, grown);
        Array.Resize(ref rowTokens, grown);
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (!disposing) return;
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
