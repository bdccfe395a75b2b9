using UioLlm.Model.Modules;
using UioLlm.Kernels;
using UioLlm.Model.Autograd;

namespace UioLlm.Model.Methods;

/// <summary>Where retrieved keys sit for RoPE.</summary>
public enum KnnPositions
{
    /// <summary>Every retrieved key is read as if it sat just beyond the local window (distance = window): in range at any length.</summary>
    Capped,
    /// <summary>Retrieved keys keep their true stream positions (with every key retrieved this is full attention).</summary>
    Absolute,
}

/// <summary>
/// Unlimiformer-style kNN attention over a frozen model: every token's keys and values are kept (the
/// datastore); each query attends to its last <see cref="Window"/> tokens as usual and, in every global layer
/// and for each head separately, to the <see cref="TopK"/> earlier keys with the highest scores q.k among all
/// tokens before that window, found exactly (every score computed, <see cref="NearestKeys.TopK"/>). The two
/// sets are merged in one softmax. No new weights.
/// </summary>
public sealed class KnnAttentionSession : KvStreamSession
{
    public KnnAttentionSession(LlamaModel model, int topK = 0, int window = 0, KnnPositions positions = KnnPositions.Capped, int chunk = 64)
        : base(model, model.Config.MaxSeqLen)
    {
        Window = window > 0 ? window : Math.Max(1, model.Config.MaxSeqLen / 2);
        TopK = topK > 0 ? topK : Math.Max(1, model.Config.MaxSeqLen / 8);
        Positions = positions;
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        Chunk = chunk;
    }

    public int Window { get; }
    public int TopK { get; }
    public KnnPositions Positions { get; }
    public int Chunk { get; }

    public override long TrainedRange => Config.MaxSeqLen;

    protected override int Prepare(int remaining) => Math.Min(remaining, Chunk);

    protected override Var Attend(Tape tape, int layer, Var qRaw, int rows, RopeTable table)
    {
        var c = Config;
        int tokens = qRaw.Value.Dim(0), d = c.HeadDim;
        int window = c.IsLocal(layer) ? Math.Min(Window, c.LocalWindow) : Window;
        // Local arm: rows [lo, rows) at positions relative to lo, sliding window.
        int lo = Math.Max(0, rows - tokens - window + 1), n = rows - lo;
        var local = new int[n];
        for (int i = 0; i < n; i++) local[i] = i;
        var kernels = Accelerator.Kernels;
        var q = tape.Rope(qRaw, local.AsSpan(n - tokens), table);
        var rotated = tape.Rent([n, c.KvHeads, d], "knn.k");
        kernels.Rope(KeysOf(layer).Slice(lo, n), rotated, local, table);
        var o = tape.Rent([tokens, c.Heads, d], "knn.o");
        var lse = tape.Rent([c.Heads, tokens], "knn.lse");
        kernels.Attention(q.Value, rotated, ValuesOf(layer).Slice(lo, n), o, lse, AttentionMask.SlidingWindow(window));
        NoteDistance(Math.Min(window, rows) - 1);
        int far = rows - window;   // rows [0, far) lie before the window of the chunk's last query
        if (c.IsLocal(layer) || far <= 0) return Var.Constant(o);

        // Retrieval arm. Capped: queries rotated at distance `window`, keys un-rotated (position 0).
        // Absolute: queries at their stream position, keys at theirs.
        float[] kHost;
        if (Positions == KnnPositions.Absolute)
        {
            var all = new int[rows];
            for (int i = 0; i < rows; i++) all[i] = i;
            using var k = Accelerator.Scratch.Rent([rows, c.KvHeads, d]);
            kernels.Rope(KeysOf(layer).Slice(0, rows), k, all, table);
            kHost = k.ToArray();
        }
        else
        {
            var raw = KeysOf(layer).Slice(0, rows).ToArray();
            kHost = new float[raw.Length];
            for (int r = 0; r < rows * c.KvHeads; r++) RopeMath.Rotate(raw.AsSpan(r * d, d), kHost.AsSpan(r * d, d), 0, table);
        }
        var vHost = ValuesOf(layer).Slice(0, rows).ToArray();
        var qHost = qRaw.Value.ToArray();
        var oHost = o.ToArray();
        var lseHost = lse.ToArray();
        double scale = 1.0 / Math.Sqrt(d);
        var rotatedQ = new float[d];
        var scores = new double[rows];
        HostAttention.Merge(oHost, lseHost, vHost, tokens, c.Heads, c.KvHeads, d, (t, h) =>
        {
            int queryRow = rows - tokens + t;
            int candidates = queryRow - window + 1;   // rows [0, candidates): outside this query's window
            if (candidates <= 0) return [];
            long position = Positions == KnnPositions.Absolute ? queryRow : window;
            RopeMath.Rotate(qHost.AsSpan((t * c.Heads + h) * d, d), rotatedQ, position, table);
            int kv = h / c.GroupSize;
            for (int j = 0; j < candidates; j++) scores[j] = scale * HostAttention.Dot(rotatedQ, kHost.AsSpan((j * c.KvHeads + kv) * d, d));
            var best = NearestKeys.TopK(scores.AsSpan(0, candidates), TopK);
            NoteDistance(Positions == KnnPositions.Absolute ? queryRow - best.Min(b => b.Row) : window);
            return best;
        });
        o.CopyFrom(oHost);
        return Var.Constant(o);
    }
}

/// <summary>Exact top-k selection over scores (the index kNN attention uses; at our sizes every score is computed).</summary>
public static class NearestKeys
{
    /// <summary>The <paramref name="k"/> highest scores with their indices, highest first (ties: lower index first).</summary>
    public static List<(double Score, int Row)> TopK(ReadOnlySpan<double> scores, int k)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        // A min-heap of the best k so far: the root is the weakest kept.
        var heap = new PriorityQueue<int, (double, int)>(Comparer<(double Score, int NegRow)>.Create((a, b) =>
            a.Score != b.Score ? a.Score.CompareTo(b.Score) : a.NegRow.CompareTo(b.NegRow)));
        for (int j = 0; j < scores.Length; j++)
        {
            var key = (scores[j], -j);
            if (heap.Count < k) heap.Enqueue(j, key);
            else if (heap.TryPeek(out _, out var weakest) && (key.Item1 > weakest.Item1 || (key.Item1 == weakest.Item1 && key.Item2 > weakest.Item2)))
                heap.EnqueueDequeue(j, key);
        }
        var result = new List<(double, int)>(heap.Count);
        while (heap.TryDequeue(out int row, out var key)) result.Add((key.Item1, row));
        result.Reverse();
        return result;
    }
}
