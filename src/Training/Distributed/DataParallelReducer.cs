using UioLlm.Kernels;
using UioLlm.Kernels.Distributed;

namespace UioLlm.Training.Distributed;

/// <summary>
/// Data-parallel gradient reduction over an <see cref="ICommunicator"/> (MPI, or a single process). A step's
/// documents are dealt round-robin (document d to rank d mod N).
/// <list type="bullet">
/// <item>Fast mode (default): each rank accumulates its documents' gradients as a single process would; then
/// the gradients of all trainable parameters are packed into buckets of <see cref="BucketElements"/> floats and
/// each bucket is summed across ranks with one all-reduce. The result equals a 1-rank run up to the order of
/// floating-point additions.</item>
/// <item>Deterministic mode: every document's gradient is taken alone (copied out, the gradients zeroed), all
/// ranks' per-document gradients are gathered, and every rank adds them in document order 0, 1, ..., k-1. The
/// additions then do not depend on the number of ranks, so an N-rank run is bit-identical to a 1-rank run in
/// this mode. It holds k gradient copies and sends N times more than the all-reduce: for checking, not speed.</item>
/// </list>
/// </summary>
public sealed class DataParallelReducer : IGradientReducer
{
    private readonly ICommunicator group;
    private readonly Dictionary<int, (float[] Gradient, StepTotals Totals)> documents = [];
    private float[]? bucket;

    /// <param name="bucketElements">Floats per all-reduce in fast mode (default 4M = 16 MB).</param>
    public DataParallelReducer(ICommunicator group, bool deterministic = false, int bucketElements = 1 << 22)
    {
        this.group = group ?? throw new ArgumentNullException(nameof(group));
        if (bucketElements <= 0) throw new ArgumentOutOfRangeException(nameof(bucketElements), bucketElements, "bucket size must be positive");
        Deterministic = deterministic;
        BucketElements = bucketElements;
    }

    public int Rank => group.Rank;

    public int Size => group.Size;

    public bool WritesRunFiles => group.Rank == 0;

    public bool Deterministic { get; }

    public int BucketElements { get; }

    /// <summary>All-reduce calls made so far (fast mode), for tests and benchmarks.</summary>
    public long AllReduceCalls { get; private set; }

    public bool Computes(int document) => document % group.Size == group.Rank;

    public void DocumentDone(int document, IReadOnlyList<Tensor> gradients, StepTotals totals)
    {
        if (!Deterministic) return;
        var copy = new float[TotalLength(gradients)];
        int at = 0;
        foreach (var g in gradients)
        {
            g.CopyTo(copy.AsSpan(at, g.Length));
            at += g.Length;
            g.Accelerator.Kernels.Fill(g, 0f);
        }
        documents[document] = (copy, totals);
    }

    public StepTotals Reduce(IReadOnlyList<Tensor> gradients, StepTotals local, int documents)
    {
        ArgumentNullException.ThrowIfNull(gradients);
        if (documents <= 0) throw new ArgumentOutOfRangeException(nameof(documents), documents, "a step has at least one document");
        return Deterministic ? ReduceInDocumentOrder(gradients, documents) : ReduceBucketed(gradients, local);
    }

    private StepTotals ReduceBucketed(IReadOnlyList<Tensor> gradients, StepTotals local)
    {
        if (group.Size > 1)
        {
            bucket ??= new float[Math.Min(BucketElements, Math.Max(1, TotalLength(gradients)))];
            // Pack whole tensors (or pieces of a tensor larger than a bucket), sum, unpack.
            var pending = new List<(Tensor Tensor, int From, int Count, int At)>();
            int filled = 0;
            void Flush()
            {
                if (filled == 0) return;
                group.AllReduceSum(bucket.AsSpan(0, filled));
                AllReduceCalls++;
                foreach (var (tensor, from, count, at) in pending)
                {
                    Piece(tensor, from, count).CopyFrom(bucket.AsSpan(at, count));
                }
                pending.Clear();
                filled = 0;
            }
            foreach (var g in gradients)
            {
                for (int from = 0; from < g.Length;)
                {
                    if (filled == bucket.Length) Flush();
                    int count = Math.Min(g.Length - from, bucket.Length - filled);
                    Piece(g, from, count).CopyTo(bucket.AsSpan(filled, count));
                    pending.Add((g, from, count, filled));
                    filled += count;
                    from += count;
                }
            }
            Flush();
        }
        Span<double> totals = [local.LossSum, local.Segments, local.Tokens];
        group.AllReduceSum(totals);
        return new StepTotals(totals[0], checked((int)totals[1]), checked((int)totals[2]));
    }

    private StepTotals ReduceInDocumentOrder(IReadOnlyList<Tensor> gradients, int count)
    {
        int length = TotalLength(gradients);
        int n = group.Size, slots = (count + n - 1) / n;
        // Rank r's slot s holds document s*N + r (zeros where that document does not exist).
        var mine = new float[slots * length];
        var mineTotals = new double[slots * 3];
        for (int s = 0; s < slots; s++)
        {
            int d = s * n + group.Rank;
            if (d >= count) continue;
            if (!documents.TryGetValue(d, out var doc))
                throw new InvalidOperationException($"DataParallelReducer: rank {group.Rank} computed no gradient for document {d} of {count}");
            if (doc.Gradient.Length != length)
                throw new InvalidOperationException($"DataParallelReducer: document {d}'s gradient has {doc.Gradient.Length} elements, the parameters {length}");
            doc.Gradient.CopyTo(mine.AsSpan(s * length));
            mineTotals[3 * s] = doc.Totals.LossSum;
            mineTotals[3 * s + 1] = doc.Totals.Segments;
            mineTotals[3 * s + 2] = doc.Totals.Tokens;
        }
        documents.Clear();
        float[] all;
        double[] allTotals;
        if (n == 1)
        {
            (all, allTotals) = (mine, mineTotals);
        }
        else
        {
            all = new float[n * mine.Length];
            allTotals = new double[n * mineTotals.Length];
            group.AllGather(mine, all);
            group.AllGather(mineTotals, allTotals);
        }
        // Add in document order, as a single process adding document gradients one after another would.
        var sum = new float[length];
        double loss = 0;
        int segments = 0, tokens = 0;
        for (int d = 0; d < count; d++)
        {
            int rank = d % n, slot = d / n;
            var doc = all.AsSpan((rank * slots + slot) * length, length);
            for (int i = 0; i < length; i++) sum[i] += doc[i];
            int t = 3 * (rank * slots + slot);
            loss += allTotals[t];
            segments += (int)allTotals[t + 1];
            tokens += (int)allTotals[t + 2];
        }
        int at = 0;
        foreach (var g in gradients)
        {
            g.CopyFrom(sum.AsSpan(at, g.Length));
            at += g.Length;
        }
        return new StepTotals(loss, segments, tokens);
    }

    private static int TotalLength(IReadOnlyList<Tensor> gradients)
    {
        long total = 0;
        foreach (var g in gradients) total += g.Length;
        return total <= int.MaxValue ? (int)total
            : throw new NotSupportedException($"DataParallelReducer: {total} gradient elements exceed one host buffer ({int.MaxValue})");
    }

    /// <summary>Elements from .. from+count-1 of a tensor, as a flat view of its storage.</summary>
    private static Tensor Piece(Tensor tensor, int from, int count) =>
        from == 0 && count == tensor.Length ? tensor : tensor.View(tensor.Length).Slice(from, count);
}
