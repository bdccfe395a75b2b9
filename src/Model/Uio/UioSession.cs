using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Generation;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Uio;

/// <summary>
/// Streaming UIO inference over text of any length. Tokens arrive in pieces of any size; the decoder reads
/// [memories ; local tokens] from one KV cache per layer (memory rows first, as its prefix). Whenever the
/// local tokens reach l they are compressed by the encoder, their memory keys and values are appended to
/// the prefix, and their local rows are dropped. Segments that a call completes are compressed together in
/// batches (segments compress independently), ahead of the decoder that reads them.
/// </summary>
public sealed class UioSession : ILongContextSession
{
    private readonly UioModel model;
    private readonly KvCache cache;
    private readonly List<int> local = [];
    private readonly Queue<PendingMemory> pending = new();
    private readonly Tensor[] rawKeys;   // per layer: un-rotated memory keys, so a capped memory can be re-rotated
    private readonly int encoderBatch;
    private readonly List<int> segmentRows = [];   // memory rows of each kept segment, oldest first
    private float[]? lastLogits;

    /// <summary>One compressed segment's memory keys (un-rotated) and values, per layer, waiting for its turn.</summary>
    private sealed record PendingMemory(Tensor[] Keys, Tensor[] Values) : IDisposable
    {
        public void Dispose()
        {
            foreach (var t in Keys) t.Dispose();
            foreach (var t in Values) t.Dispose();
        }
    }

    public UioSession(UioModel model, int encoderBatch = 8)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (encoderBatch < 1) throw new ArgumentOutOfRangeException(nameof(encoderBatch), $"UioSession: encoder batch must be >= 1, got {encoderBatch}");
        this.model = model;
        this.encoderBatch = encoderBatch;
        var c = model.Base.Config;
        int initial = model.Config.SegmentLength + 4 * model.Config.MemoryTokens;
        cache = new KvCache(model.Accelerator, c.Layers, initial, c.KvHeads, c.HeadDim);
        rawKeys = new Tensor[c.Layers];
        for (int l = 0; l < rawKeys.Length; l++) rawKeys[l] = model.Accelerator.Allocate([initial, c.KvHeads, c.HeadDim], $"uio.session.{l}.raw_k");
    }

    public UioModel Model => model;

    /// <summary>Tokens fed so far (generated tokens included).</summary>
    public long TokensSeen { get; private set; }

    /// <summary>Segments whose memory the decoder currently reads.</summary>
    public int MemorySegments => segmentRows.Count;

    /// <summary>Memory rows in front of the local tokens (MemorySegments * n).</summary>
    public int MemoryTokens => cache.PrefixLength;

    /// <summary>Tokens in the local window (fewer than l).</summary>
    public int LocalTokens => local.Count;

    /// <summary>Bytes of keys and values the decoder attends to now (memory plus local window, all layers).</summary>
    public long KvBytes => cache.StoredBytes;

    /// <summary>Logits [vocab] after the last token fed; null before any.</summary>
    public ReadOnlySpan<float> LastLogits => lastLogits;

    /// <summary>
    /// True once the decoder has read memory rows + local tokens past the base's trained context (UIO.md, "Position
    /// budget"; possible only with <see cref="UioConfig.AllowExtrapolation"/>, otherwise such a step throws).
    /// </summary>
    public bool OutOfTrainedRange { get; private set; }

    /// <summary>
    /// Feeds tokens and returns, for each, the log-probability the model gave it from everything before it
    /// (NaN for the very first token of the session, which has no context).
    /// </summary>
    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        var logProbs = new double[tokens.Length];
        Process(tokens, logProbs);
        return logProbs;
    }

    /// <summary>
    /// Feeds a prompt when only the logits after it are needed: the segments it completes go straight to the
    /// encoder (batched) without a decoder pass; only the final remainder is decoded.
    /// </summary>
    public void Prefill(ReadOnlySpan<int> tokens)
    {
        int l = model.Config.SegmentLength;
        int total = local.Count + tokens.Length;
        // The segment holding the last token is decoded (its logits are the point of a prefill), so only
        // the segments before it skip the decoder.
        int full = total == 0 ? 0 : (total - 1) / l * l;
        if (full <= local.Count)
        {
            Process(tokens, null);
            return;
        }
        // [local ; tokens] up to the last whole segment: compress, activate in order, drop the local window.
        var segments = new int[full];
        local.CopyTo(segments);
        int fromInput = full - local.Count;
        tokens[..fromInput].CopyTo(segments.AsSpan(local.Count));
        for (int s = 0; s < full; s += encoderBatch * l)
            Compress(segments.AsSpan(s, Math.Min(encoderBatch * l, full - s)));
        cache.DropLocal();
        local.Clear();
        while (pending.Count > 0) Activate();
        TokensSeen += fromInput;
        Process(tokens[fromInput..], null);
    }

    /// <summary>Generates after what was fed (greedy or sampled), feeding each new token back (compressing at l).</summary>
    public GenerationResult Generate(GenerationOptions? options = null, Action<int>? onToken = null, CancellationToken cancellation = default)
    {
        options ??= new GenerationOptions();
        if (lastLogits is null) throw new InvalidOperationException("UioSession.Generate: feed a prompt first (at least BOS)");
        var sampler = new Sampler(options.Temperature, options.TopP, options.Seed);
        var stops = options.StopTokens ?? [model.Base.Config.EosId];
        var generated = new List<int>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var reason = StopReason.TokenLimit;
        while (generated.Count < options.MaxNewTokens)
        {
            if (cancellation.IsCancellationRequested) { reason = StopReason.Cancelled; break; }
            int next = sampler.Sample(lastLogits);
            if (stops.Contains(next)) { reason = StopReason.StopToken; break; }
            generated.Add(next);
            onToken?.Invoke(next);
            Process([next], null);
        }
        return new GenerationResult([.. generated], reason, 0, TimeSpan.Zero, clock.Elapsed);
    }

    /// <summary>Decodes tokens in chunks that never overflow the local window, compressing each time it fills.</summary>
    private void Process(ReadOnlySpan<int> tokens, double[]? logProbs)
    {
        int l = model.Config.SegmentLength;
        PrepareMemories(tokens);
        int done = 0;
        while (done < tokens.Length)
        {
            int take = Math.Min(tokens.Length - done, l - local.Count);
            var chunk = tokens.Slice(done, take);
            Decode(chunk, logProbs is null ? default : logProbs.AsSpan(done, take));
            foreach (int t in chunk) local.Add(t);
            TokensSeen += take;
            done += take;
            if (local.Count == l)
            {
                // The window is full: its memory (compressed ahead of time) replaces its tokens.
                cache.DropLocal();
                local.Clear();
                Activate();
            }
        }
    }

    /// <summary>Compresses, in batches, every segment this call will complete, before decoding starts.</summary>
    private void PrepareMemories(ReadOnlySpan<int> tokens)
    {
        int l = model.Config.SegmentLength;
        int first = l - local.Count;
        if (tokens.Length < first) return;
        int closing = 1 + (tokens.Length - first) / l;
        var segments = new int[closing * l];
        local.CopyTo(segments);
        tokens[..(closing * l - local.Count)].CopyTo(segments.AsSpan(local.Count));
        for (int s = 0; s < segments.Length; s += encoderBatch * l)
            Compress(segments.AsSpan(s, Math.Min(encoderBatch * l, segments.Length - s)));
    }

    /// <summary>
    /// Appends a memory built elsewhere (for example <see cref="UioModel.RawTokenMemory"/>, or a memory taken from
    /// another document) as the next segment(s) the decoder reads: its states go through the transfer head and are
    /// placed after the memories already held, as if those segments had just been compressed. Allowed only
    /// between segments (no local tokens), since memory rows always precede the local window.
    /// </summary>
    /// <exception cref="InvalidOperationException">The local window holds tokens.</exception>
    public void AppendMemory(Memory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var c = model.Base.Config;
        if (local.Count > 0)
            throw new InvalidOperationException($"UioSession.AppendMemory: the local window holds {local.Count} tokens; a memory can be appended only between segments (after a multiple of l = {model.Config.SegmentLength} tokens)");
        if (memory.States.Count != c.Layers || memory.States[0].Value.Dim(1) != c.Dim)
            throw new ArgumentException($"UioSession.AppendMemory: the memory has {memory.States.Count} layers of width {memory.States[0].Value.Dim(1)}; the model has {c.Layers} of width {c.Dim}", nameof(memory));
        using (var tape = new Tape(model.Accelerator, "uio.append"))
        using (tape.NoGrad())
            Enqueue(tape, memory);
        for (int s = 0; s < memory.Segments; s++) Activate();
    }

    /// <summary>Runs the encoder and transfer head on whole segments and queues each segment's K/V.</summary>
    private void Compress(ReadOnlySpan<int> segments)
    {
        using var tape = new Tape(model.Accelerator, "uio.compress");
        using var _ = tape.NoGrad();
        Enqueue(tape, model.Compress(tape, segments));
    }

    /// <summary>Turns every segment of a memory into its un-rotated K/V through the transfer head and queues them, oldest first.</summary>
    private void Enqueue(Tape tape, Memory memory)
    {
        var c = model.Base.Config;
        int rows = memory.TokensPerSegment;
        var kernels = model.Accelerator.Kernels;
        var entries = Enumerable.Range(0, memory.Segments).Select(_ => new PendingMemory(new Tensor[c.Layers], new Tensor[c.Layers])).ToArray();
        for (int layer = 0; layer < c.Layers; layer++)
        {
            var (k, v) = model.TransferKvUnrotated(tape, memory.States[layer], layer);
            for (int s = 0; s < memory.Segments; s++)
            {
                entries[s].Keys[layer] = model.Accelerator.Allocate([rows, c.KvHeads, c.HeadDim]);
                entries[s].Values[layer] = model.Accelerator.Allocate([rows, c.KvHeads, c.HeadDim]);
                kernels.Copy(k.Value.Slice(s * rows, rows), entries[s].Keys[layer]);
                kernels.Copy(v.Value.Slice(s * rows, rows), entries[s].Values[layer]);
            }
        }
        foreach (var e in entries) pending.Enqueue(e);
    }

    /// <summary>Appends the next queued memory to the prefix (keys rotated at their positions); applies the cap.</summary>
    private void Activate()
    {
        if (!pending.TryDequeue(out var memory))
            throw new InvalidOperationException("UioSession: a segment closed without its compressed memory (internal error)");
        using (memory)
        {
            int n = memory.Keys[0].Dim(0), start = cache.PrefixLength;
            EnsureRows(start + n + model.Config.SegmentLength);
            var kernels = model.Accelerator.Kernels;
            for (int layer = 0; layer < rawKeys.Length; layer++)
            {
                kernels.Copy(memory.Keys[layer], rawKeys[layer].Slice(start, n));
                kernels.Copy(memory.Values[layer], cache.Values(layer).Slice(start, n));
            }
            cache.ExtendPrefix(n);
            segmentRows.Add(n);
            RotateKeys(start, n);
        }
        int cap = model.Config.MemoryCapSegments;
        if (cap > 0 && segmentRows.Count > cap)
        {
            // Our extension: drop the oldest segment's memory; the rest move to the front and are re-rotated.
            int n = segmentRows[0], keep = cache.PrefixLength - n;
            foreach (var raw in rawKeys) TensorRows.Move(raw, n, 0, keep);
            cache.RemovePrefix(n);
            segmentRows.RemoveAt(0);
            RotateKeys(0, keep);
        }
    }

    /// <summary>Cache keys [start, start + count) = the raw memory keys rotated at their prefix positions.</summary>
    private void RotateKeys(int start, int count)
    {
        if (count == 0) return;
        var positions = new int[count];
        for (int i = 0; i < count; i++) positions[i] = start + i;
        for (int layer = 0; layer < rawKeys.Length; layer++)
            model.Accelerator.Kernels.Rope(rawKeys[layer].Slice(start, count), cache.Keys(layer).Slice(start, count), positions, model.Base.Rope);
    }

    private void EnsureRows(int rows)
    {
        if (rows <= cache.Capacity) return;
        cache.EnsureCapacity(rows);
        for (int layer = 0; layer < rawKeys.Length; layer++)
            rawKeys[layer] = TensorRows.Grow(rawKeys[layer], cache.Capacity, cache.PrefixLength);
    }

    /// <summary>One decoder pass over a chunk: appends it to the local window, writes log-probs, keeps the last logits.</summary>
    private void Decode(ReadOnlySpan<int> chunk, Span<double> logProbs)
    {
        model.CheckPositionBudget(cache.PrefixLength, cache.Length - cache.PrefixLength + chunk.Length);
        if (cache.Length + chunk.Length > model.ContextBudget) OutOfTrainedRange = true;
        EnsureRows(cache.Length + chunk.Length);
        using var tape = new Tape(model.Accelerator, "uio.decode");
        using var _ = tape.NoGrad();
        var hidden = model.Base.Hidden(tape, model.Base.Embed(tape, chunk), default, cache);
        int vocab = model.Base.Config.VocabSize;
        if (logProbs.IsEmpty)
        {
            // Only the last position's logits are needed.
            var last = model.Base.Head.Forward(tape, tape.SliceRows(hidden, chunk.Length - 1, 1));
            lastLogits = last.Value.ToArray();
            return;
        }
        var logits = model.Base.Head.Forward(tape, hidden).Value;
        // Row t predicts chunk[t + 1]: the fused cross-entropy kernel gives each row's log-sum-exp.
        var targets = new int[chunk.Length];
        for (int t = 0; t + 1 < chunk.Length; t++) targets[t] = chunk[t + 1];
        targets[^1] = -100;
        using var lse = model.Accelerator.Scratch.Rent([chunk.Length]);
        model.Accelerator.Kernels.CrossEntropy(logits, targets, lse);
        var lseHost = lse.ToArray();
        ReadOnlySpan<float> rows = logits.Accelerator.Kind == AcceleratorKind.Cpu ? logits.Span : logits.ToArray();
        logProbs[0] = lastLogits is null ? double.NaN : LogSoftmaxAt(lastLogits, chunk[0]);
        for (int t = 1; t < chunk.Length; t++) logProbs[t] = rows[(t - 1) * vocab + chunk[t]] - (double)lseHost[t - 1];
        lastLogits = rows.Slice((chunk.Length - 1) * vocab, vocab).ToArray();
    }

    /// <summary>log softmax(logits)[index], accumulated in double (kept for callers; the shared helper is <see cref="LogProbs.At"/>).</summary>
    public static double LogSoftmaxAt(ReadOnlySpan<float> logits, int index) => LogProbs.At(logits, index);

    public void Dispose()
    {
        cache.Dispose();
        foreach (var t in rawKeys) t.Dispose();
        while (pending.TryDequeue(out var p)) p.Dispose();
    }
}
