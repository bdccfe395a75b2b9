using System.Buffers;

namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>How a query-block x key-tile rectangle meets the mask.</summary>
internal enum TileKind
{
    /// <summary>No query of the block sees any key of the tile: skip it.</summary>
    Hidden,
    /// <summary>Every query sees every key: no per-element work.</summary>
    Full,
    /// <summary>Mixed: scores outside each row's visible intervals are set to -inf.</summary>
    Partial,
}

/// <summary>
/// The visible keys of every query row as at most <see cref="AttentionMask.MaxIntervals"/> intervals, computed
/// once per call (per head half when S2-Attn shifts the upper heads) and shared read-only by all workers.
/// </summary>
internal readonly struct RowSpans
{
    /// <summary>Ints per row: [count, start0, end0, start1, end1, start2, end2, unused].</summary>
    private const int Stride = 8;

    private readonly int[] table;
    private readonly int tq;
    private readonly int splitHead;   // heads >= splitHead use the second table half; int.MaxValue when one table serves all

    private RowSpans(int[] table, int tq, int splitHead)
    {
        this.table = table;
        this.tq = tq;
        this.splitHead = splitHead;
    }

    public static RowSpans Build(AttentionMask mask, int queryHeads, int tq, int tk)
    {
        bool perHalf = mask.ShiftUpperHalfHeads && mask.GroupSize > 0;
        int variants = perHalf ? 2 : 1;
        int[] table = ArrayPool<int>.Shared.Rent(Math.Max(1, variants * tq * Stride));
        Span<int> bounds = stackalloc int[2 * AttentionMask.MaxIntervals];
        for (int variant = 0; variant < variants; variant++)
        {
            int head = variant == 0 ? 0 : queryHeads - 1;   // a representative head of each half
            for (int i = 0; i < tq; i++)
            {
                int count = mask.VisibleIntervals(head, queryHeads, i, tq, tk, bounds);
                var row = table.AsSpan((variant * tq + i) * Stride, Stride);
                row[0] = count;
                bounds[..(2 * count)].CopyTo(row[1..]);
            }
        }
        return new RowSpans(table, tq, perHalf ? queryHeads / 2 : int.MaxValue);
    }

    public void Release() => ArrayPool<int>.Shared.Return(table);

    /// <summary>Count followed by the interval bounds of query <paramref name="i"/> for head <paramref name="head"/>.</summary>
    public ReadOnlySpan<int> Row(int head, int i) =>
        table.AsSpan(((head >= splitHead ? tq : 0) + i) * Stride, Stride);

    /// <summary>The smallest key range [lo, hi) holding every key some query of rows [i0, i0+rows) sees (lo = hi when none).</summary>
    public void KeyRange(int head, int i0, int rows, out int lo, out int hi)
    {
        lo = int.MaxValue;
        hi = 0;
        for (int i = i0; i < i0 + rows; i++)
        {
            var row = Row(head, i);
            int count = row[0];
            if (count == 0) continue;
            lo = Math.Min(lo, row[1]);
            hi = Math.Max(hi, row[2 * count]);
        }
        if (hi == 0) lo = 0;
    }

    /// <summary>Classify rows [i0, i0+rows) against keys [j0, j1).</summary>
    public TileKind Classify(int head, int i0, int rows, int j0, int j1)
    {
        bool any = false, all = true;
        for (int i = i0; i < i0 + rows; i++)
        {
            var row = Row(head, i);
            bool covered = false;
            for (int t = 0; t < row[0]; t++)
            {
                int s = row[1 + 2 * t], e = row[2 + 2 * t];
                if (s < j1 && e > j0) any = true;
                if (s <= j0 && e >= j1) covered = true;
            }
            all &= covered;
        }
        return !any ? TileKind.Hidden : all ? TileKind.Full : TileKind.Partial;
    }

    /// <summary>Set to -inf the entries st[c, r] of keys j0+c (c &lt; count) that query row r does not see (transposed tile).</summary>
    public static unsafe void MaskColumn(float* st, int ld, int r, int j0, int count, ReadOnlySpan<int> row)
    {
        int pos = j0, end = j0 + count;
        for (int t = 0; t < row[0] && pos < end; t++)
        {
            int s = Math.Max(row[1 + 2 * t], j0), e = Math.Min(row[2 + 2 * t], end);
            if (e <= s) continue;
            for (; pos < s; pos++) st[(pos - j0) * ld + r] = float.NegativeInfinity;
            pos = Math.Max(pos, e);
        }
        for (; pos < end; pos++) st[(pos - j0) * ld + r] = float.NegativeInfinity;
    }

    /// <summary>
    /// Set to -inf the scores of keys j0..j0+width-1 the row does not see (only for <see cref="TileKind.Partial"/> tiles)
    /// and the padding columns width..paddedWidth-1 that round the tile up to whole vectors.
    /// </summary>
    public static unsafe void MaskRow(float* scores, int j0, int width, int paddedWidth, TileKind kind, ReadOnlySpan<int> row)
    {
        for (int c = width; c < paddedWidth; c++) scores[c] = float.NegativeInfinity;
        if (kind != TileKind.Partial) return;
        int pos = j0, end = j0 + width;
        for (int t = 0; t < row[0] && pos < end; t++)
        {
            int s = Math.Max(row[1 + 2 * t], j0), e = Math.Min(row[2 + 2 * t], end);
            if (e <= s) continue;
            for (; pos < s; pos++) scores[pos - j0] = float.NegativeInfinity;
            pos = Math.Max(pos, e);
        }
        for (; pos < end; pos++) scores[pos - j0] = float.NegativeInfinity;
    }
}

/// <summary>Per-thread pinned scratch for the attention tiles, grown on demand and reused across calls.</summary>
internal sealed unsafe class AttentionScratch
{
    [ThreadStatic] private static AttentionScratch? current;

    private float[] data = [];

    public static AttentionScratch Current => current ??= new AttentionScratch();

    /// <summary>A pinned block of at least <paramref name="floats"/> floats (contents unspecified).</summary>
    public float* Get(int floats)
    {
        if (data.Length < floats || data.Length == 0)
            data = GC.AllocateUninitializedArray<float>(Math.Max(Math.Max(floats, 1), 2 * data.Length), pinned: true);
        return (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref data[0]);
    }
}
