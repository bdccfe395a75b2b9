using UioLlm.Model.Modules;
using UioLlm.Kernels;
using UioLlm.Model.Autograd;

namespace UioLlm.Model.Methods;

/// <summary>
/// LM-Infinite (Han et al., 2023) over a frozen model: a Lambda-shaped mask, where each query sees the first
/// <see cref="GlobalTokens"/> tokens of the stream and the last <see cref="LocalTokens"/> tokens (itself
/// included), and a distance cap: a key farther than <see cref="DistanceCap"/> (default: the trained window - 1,
/// the largest distance seen in pre-training) is read as if it were exactly DistanceCap away. Tokens between the two arms are never read again, so they are evicted. The local arm runs
/// in the attention kernel at true distances; the global arm (a handful of keys, each at its own capped
/// distance from each query) is scored on the host and merged by log-sum-exp.
/// </summary>
public sealed class LmInfiniteSession : KvStreamSession
{
    public LmInfiniteSession(LlamaModel model, int globalTokens = 10, int localTokens = 0, int distanceCap = 0, int chunk = 128)
        : base(model, globalTokens + (localTokens > 0 ? localTokens : model.Config.MaxSeqLen) + chunk)
    {
        GlobalTokens = globalTokens;
        LocalTokens = localTokens > 0 ? localTokens : model.Config.MaxSeqLen;
        DistanceCap = distanceCap > 0 ? distanceCap : model.Config.MaxSeqLen - 1;
        Chunk = chunk;
        if (GlobalTokens < 0 || GlobalTokens >= LocalTokens)
            throw new ArgumentOutOfRangeException(nameof(globalTokens), $"LM-Infinite: global tokens ({GlobalTokens}) must lie in [0, local tokens ({LocalTokens}))");
        if (LocalTokens - 1 > DistanceCap)
            throw new ArgumentOutOfRangeException(nameof(localTokens), $"LM-Infinite: the local arm's farthest distance ({LocalTokens - 1}) must not exceed the distance cap ({DistanceCap})");
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
    }

    public int GlobalTokens { get; }
    public int LocalTokens { get; }
    public int DistanceCap { get; }
    public int Chunk { get; }

    protected override int Prepare(int remaining)
    {
        if (TokensSeen < GlobalTokens) return (int)Math.Min(remaining, GlobalTokens - TokensSeen);
        // Keep the global rows and the last LocalTokens - 1 others: all the next query can see.
        int others = Length - GlobalTokens;
        if (others > LocalTokens - 1) EvictRows(GlobalTokens, others - (LocalTokens - 1));
        return Math.Min(remaining, Chunk);
    }

    protected override Var Attend(Tape tape, int layer, Var qRaw, int rows, RopeTable table)
    {
        int tokens = qRaw.Value.Dim(0);
        // The first GlobalTokens tokens: nothing evicted yet, every distance < GlobalTokens: plain causal.
        if (rows <= GlobalTokens || RowPosition(rows - tokens) < GlobalTokens) return base.Attend(tape, layer, qRaw, rows, table);

        var c = Config;
        int g = GlobalTokens, n = rows - g, d = c.HeadDim;
        int window = c.IsLocal(layer) ? Math.Min(LocalTokens, c.LocalWindow) : LocalTokens;
        // Local arm: rows [g, rows) are consecutive stream tokens; positions relative to the first of them.
        var positions = new int[n];
        for (int i = 0; i < n; i++) positions[i] = i;
        var q = tape.Rope(qRaw, positions.AsSpan(n - tokens), table);
        var rotated = tape.Rent([n, c.KvHeads, d], "lminfinite.k");
        var kernels = Accelerator.Kernels;
        kernels.Rope(KeysOf(layer).Slice(g, n), rotated, positions, table);
        var o = tape.Rent([tokens, c.Heads, d], "lminfinite.o");
        var lse = tape.Rent([c.Heads, tokens], "lminfinite.lse");
        kernels.Attention(q.Value, rotated, ValuesOf(layer).Slice(g, n), o, lse, AttentionMask.SlidingWindow(window));
        NoteDistance(window - 1);
        if (g == 0) return Var.Constant(o);

        // Global arm: each (query, global key) at distance min(true distance, cap); a local layer only where
        // the true distance is inside its window.
        var qHost = qRaw.Value.ToArray();
        var kHost = KeysOf(layer).Slice(0, g).ToArray();
        var vHost = ValuesOf(layer).Slice(0, g).ToArray();
        var oHost = o.ToArray();
        var lseHost = lse.ToArray();
        double scale = 1.0 / Math.Sqrt(d);
        var rotatedQ = new float[d];
        var pairs = new List<(double, int)>(g);
        HostAttention.Merge(oHost, lseHost, vHost, tokens, c.Heads, c.KvHeads, d, (t, h) =>
        {
            pairs.Clear();
            long queryPosition = RowPosition(rows - tokens + t);
            int kv = h / c.GroupSize;
            for (int j = 0; j < g; j++)
            {
                long distance = queryPosition - RowPosition(j);
                if (c.IsLocal(layer) && distance >= c.LocalWindow) continue;
                long capped = Math.Min(distance, DistanceCap);
                NoteDistance(capped);
                // q rotated at the capped distance against the key at position 0: RoPE sees exactly that distance.
                RopeMath.Rotate(qHost.AsSpan((t * c.Heads + h) * d, d), rotatedQ, capped, table);
                var keyRotated = new float[d];
                RopeMath.Rotate(kHost.AsSpan((j * c.KvHeads + kv) * d, d), keyRotated, 0, table);
                pairs.Add((scale * HostAttention.Dot(rotatedQ, keyRotated), j));
            }
            return pairs;
        });
        o.CopyFrom(oHost);
        return Var.Constant(o);
    }
}
