using UioLlm.Kernels;

namespace UioLlm.Model.Methods.Compression;

/// <summary>
/// The inference loop shared by the soft-prompt compression methods (AutoCompressor, ICAE): the stream is cut into
/// segments of <see cref="SegmentLength"/> tokens; the tokens of the open segment are scored by one forward over
/// [compressed prefix ; the segment's tokens so far] (<see cref="SegmentLogits"/>), and when a segment is complete it
/// is folded into the prefix (<see cref="CloseSegment"/>, which appends its rows with <see cref="AppendPrefix"/>). A token's log-probability comes from the logits after the
/// token before it, so the first token of a segment is scored by the last position of the previous segment's pass:
/// the same rule as the methods' training loss. The open segment is re-read on every <see cref="Feed"/>: a piece of
/// p tokens costs one forward over at most prefix + segment rows.
/// </summary>
public abstract class CompressedSegmentSession : ILongContextSession
{
    private readonly List<int> segment = [];
    private float[] lastLogits = [];
    private Tensor? prefix;
    private bool disposed;

    /// <param name="segmentLength">Tokens per segment (at least 1).</param>
    /// <param name="vocab">The base's vocabulary size (width of a logits row).</param>
    protected CompressedSegmentSession(int segmentLength, int vocab)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(segmentLength, 1);
        SegmentLength = segmentLength;
        Vocab = vocab;
    }

    /// <summary>Tokens per segment.</summary>
    public int SegmentLength { get; }

    /// <summary>Width of a logits row.</summary>
    protected int Vocab { get; }

    /// <summary>The compressed prefix [<see cref="PrefixRows"/>, dim] the next segment reads (summary vectors or memory slots), oldest first; null before the first segment is closed.</summary>
    protected Tensor? Prefix => prefix;

    /// <summary>Rows of the compressed prefix the next segment reads.</summary>
    protected int PrefixRows => prefix?.Dim(0) ?? 0;

    /// <summary>
    /// Appends <paramref name="count"/> rows (<paramref name="rows"/>, [count, dim]) to the prefix: a new tensor
    /// [<see cref="PrefixRows"/> + count, dim] named <paramref name="name"/> replaces (and disposes) the old one.
    /// </summary>
    protected void AppendPrefix(Accelerator accelerator, Tensor rows, int count, string name)
    {
        int p = PrefixRows;
        var next = accelerator.Allocate([p + count, BaseConfig.Dim], name);
        if (prefix is not null) accelerator.Kernels.Copy(prefix, next.Slice(0, p));
        accelerator.Kernels.Copy(rows, next.Slice(p, count));
        prefix?.Dispose();
        prefix = next;
    }

    /// <summary>The base model (for the KV-size estimate and the trained window).</summary>
    protected abstract LlamaConfig BaseConfig { get; }

    /// <summary>Logits [tokens.Length * vocab] (row-major) of the open segment's tokens read after the current prefix.</summary>
    protected abstract float[] SegmentLogits(ReadOnlySpan<int> tokens);

    /// <summary>Folds a completed segment into the prefix (compresses it).</summary>
    protected abstract void CloseSegment(ReadOnlySpan<int> tokens);

    /// <summary>The number of positions one pass over a segment of <paramref name="tokens"/> tokens spans (prefix included).</summary>
    protected virtual int PassPositions(int tokens) => PrefixRows + tokens;

    public long TokensSeen { get; private set; }

    public ReadOnlySpan<float> LastLogits => lastLogits;

    /// <summary>K/V bytes of the rows the next forward attends to: the prefix and the open segment, every layer.</summary>
    public long KvBytes => 2L * (PrefixRows + segment.Count) * BaseConfig.Layers * BaseConfig.KvDim * sizeof(float);

    public bool OutOfTrainedRange { get; private set; }

    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var result = new double[tokens.Length];
        int done = 0;
        while (done < tokens.Length)
        {
            int n = Math.Min(SegmentLength - segment.Count, tokens.Length - done);
            var piece = tokens.Slice(done, n);
            foreach (int id in piece)
                if ((uint)id >= (uint)Vocab)
                    throw new ArgumentOutOfRangeException(nameof(tokens), $"{GetType().Name}: token id {id} is outside the vocabulary [0, {Vocab})");
            int before = segment.Count;
            foreach (int id in piece) segment.Add(id);
            if (PassPositions(segment.Count) > BaseConfig.MaxSeqLen) OutOfTrainedRange = true;
            var rows = SegmentLogits(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(segment));
            LogProbs.OfChunk(lastLogits, rows.AsSpan(before * Vocab), Vocab, piece, result.AsSpan(done, n));
            lastLogits = rows.AsSpan((segment.Count - 1) * Vocab, Vocab).ToArray();
            TokensSeen += n;
            done += n;
            if (segment.Count == SegmentLength)
            {
                CloseSegment(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(segment));
                segment.Clear();
            }
        }
        return result;
    }

    public void Prefill(ReadOnlySpan<int> tokens) => Feed(tokens);

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        prefix?.Dispose();
        prefix = null;
        GC.SuppressFinalize(this);
    }
}
