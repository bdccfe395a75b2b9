namespace UioLlm.Kernels.Distributed;

/// <summary>
/// Exact attention over a sequence sharded across the processes of a group (ring attention, Liu et al. 2023).
/// Rank r holds block r of the sequence: its queries q [T,Hq,D] and its keys and values k, v [T,Hkv,D], at
/// global positions r*T .. r*T+T-1 (every rank holds a block of the same shape). The key/value blocks travel
/// around the ring (rank r sends to r+1 and receives from r-1); each rank runs the flash attention kernel of its
/// queries against every block it is handed and merges the partial results by their log-sum-exp (online
/// softmax), so besides its own block no rank holds more than two key/value blocks at a time. Causal: query position p sees key positions
/// &lt;= p (blocks after the rank's own are skipped, its own block is causal, earlier blocks are fully visible);
/// otherwise every query sees every key.
/// The backward pass sends the blocks around again together with their dK/dV accumulators; each rank adds its
/// queries' contribution (the attention backward kernel run with the global output and log-sum-exp, which makes
/// every block's share exact) and the accumulators come home after a full turn.
/// Buffers go through host memory, so any backend works; communication is not overlapped with compute.
/// </summary>
public static class RingAttention
{
    /// <summary>Forward: o [T,Hq,D] and lse [Hq,T] of this rank's queries over the whole sequence (overwritten).</summary>
    public static void Forward(ICommunicator group, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, bool causal, float? scale = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        var (t, hq, hkv, d) = CheckShapes(group, q, k, v, o, lse);
        var acc = q.Accelerator;
        var kernels = acc.Kernels;
        int kvLength = t * hkv * d;
        var block = new float[2 * kvLength];
        var incoming = new float[2 * kvLength];
        k.CopyTo(block.AsSpan(0, kvLength));
        v.CopyTo(block.AsSpan(kvLength, kvLength));

        var oSum = new float[t * hq * d];
        var lseSum = new float[hq * t];
        Array.Fill(lseSum, float.NegativeInfinity);
        var oPart = new float[oSum.Length];
        var lsePart = new float[lseSum.Length];
        using var kb = acc.Scratch.Rent(k.Shape);
        using var vb = acc.Scratch.Rent(v.Shape);
        using var ob = acc.Scratch.Rent(o.Shape);
        using var lb = acc.Scratch.Rent(lse.Shape);
        int n = group.Size, r = group.Rank;
        for (int step = 0; step < n; step++)
        {
            int owner = (r - step + n) % n;
            if (!causal || owner <= r)
            {
                kb.CopyFrom(block.AsSpan(0, kvLength));
                vb.CopyFrom(block.AsSpan(kvLength, kvLength));
                kernels.Attention(q, kb, vb, ob, lb, MaskFor(causal, owner, r), scale);
                ob.CopyTo(oPart);
                lb.CopyTo(lsePart);
                Merge(oSum, lseSum, oPart, lsePart, t, hq, d);
            }
            if (step < n - 1)
            {
                group.SendReceive(block, (r + 1) % n, incoming, (r - 1 + n) % n);
                (block, incoming) = (incoming, block);
            }
        }
        o.CopyFrom(oSum);
        lse.CopyFrom(lseSum);
    }

    /// <summary>
    /// Backward from the forward's o and lse: dq [T,Hq,D] of this rank's queries and dk, dv [T,Hkv,D] of its keys
    /// and values accumulate (+=), as <see cref="IKernels.AttentionBackward"/> does.
    /// </summary>
    public static void Backward(ICommunicator group, Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, bool causal,
        Tensor dq, Tensor dk, Tensor dv, float? scale = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        var (t, hq, hkv, d) = CheckShapes(group, q, k, v, o, lse);
        Same(dO, o, "dO");
        Same(dq, q, "dq");
        Same(dk, k, "dk");
        Same(dv, v, "dv");
        var acc = q.Accelerator;
        var kernels = acc.Kernels;
        int kvLength = t * hkv * d;
        // [k ; v ; dk ; dv] of one block, travelling together.
        var block = new float[4 * kvLength];
        var incoming = new float[4 * kvLength];
        k.CopyTo(block.AsSpan(0, kvLength));
        v.CopyTo(block.AsSpan(kvLength, kvLength));
        using var kb = acc.Scratch.Rent(k.Shape);
        using var vb = acc.Scratch.Rent(v.Shape);
        using var dkb = acc.Scratch.Rent(k.Shape);
        using var dvb = acc.Scratch.Rent(v.Shape);
        int n = group.Size, r = group.Rank;
        for (int step = 0; step < n; step++)
        {
            int owner = (r - step + n) % n;
            if (!causal || owner <= r)
            {
                kb.CopyFrom(block.AsSpan(0, kvLength));
                vb.CopyFrom(block.AsSpan(kvLength, kvLength));
                dkb.CopyFrom(block.AsSpan(2 * kvLength, kvLength));
                dvb.CopyFrom(block.AsSpan(3 * kvLength, kvLength));
                kernels.AttentionBackward(q, kb, vb, o, dO, lse, MaskFor(causal, owner, r), dq, dkb, dvb, scale);
                dkb.CopyTo(block.AsSpan(2 * kvLength, kvLength));
                dvb.CopyTo(block.AsSpan(3 * kvLength, kvLength));
            }
            if (n > 1)
            {
                // The last turn only brings the accumulators home: keys and values are not needed any more.
                int length = step < n - 1 ? 4 * kvLength : 2 * kvLength;
                int from = step < n - 1 ? 0 : 2 * kvLength;
                group.SendReceive(block.AsSpan(from, length), (r + 1) % n, incoming.AsSpan(from, length), (r - 1 + n) % n);
                (block, incoming) = (incoming, block);
            }
        }
        // Home again: block now holds this rank's own dK, dV accumulated by every rank's queries.
        dkb.CopyFrom(block.AsSpan(2 * kvLength, kvLength));
        dvb.CopyFrom(block.AsSpan(3 * kvLength, kvLength));
        kernels.Axpy(1f, dkb, dk);
        kernels.Axpy(1f, dvb, dv);
    }

    /// <summary>The mask of this rank's queries against the block of rank <paramref name="owner"/> (not called for blocks causally after it).</summary>
    private static AttentionMask MaskFor(bool causal, int owner, int rank) =>
        causal && owner == rank ? AttentionMask.CausalMask() : AttentionMask.None;

    /// <summary>Online-softmax merge: (o, lse) := the attention over both key sets from the two partial results.</summary>
    private static void Merge(float[] o, float[] lse, float[] oPart, float[] lsePart, int t, int hq, int d)
    {
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < t; i++)
            {
                float a = lse[h * t + i], b = lsePart[h * t + i];
                if (float.IsNegativeInfinity(b)) continue;
                var row = o.AsSpan((i * hq + h) * d, d);
                var part = oPart.AsSpan((i * hq + h) * d, d);
                if (float.IsNegativeInfinity(a))
                {
                    part.CopyTo(row);
                    lse[h * t + i] = b;
                    continue;
                }
                float max = Math.Max(a, b);
                float wa = MathF.Exp(a - max), wb = MathF.Exp(b - max);
                float total = wa + wb;
                wa /= total;
                wb /= total;
                for (int x = 0; x < d; x++) row[x] = wa * row[x] + wb * part[x];
                lse[h * t + i] = max + MathF.Log(total);
            }
    }

    private static (int T, int Hq, int Hkv, int D) CheckShapes(ICommunicator group, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse)
    {
        if (q.Rank != 3 || k.Rank != 3)
            throw new ArgumentException($"RingAttention: q must be [T,Hq,D] and k, v [T,Hkv,D] (no batch axis), got q {q.ShapeString}, k {k.ShapeString}");
        int t = q.Dim(0), hq = q.Dim(1), d = q.Dim(2), hkv = k.Dim(1);
        if (k.Dim(0) != t || k.Dim(2) != d)
            throw new ArgumentException($"RingAttention: each rank holds the same positions of queries and keys, so k must be [{t},Hkv,{d}], got {k.ShapeString}");
        Same(v, k, "v");
        Same(o, q, "o");
        if (lse.Rank != 2 || lse.Dim(0) != hq || lse.Dim(1) != t)
            throw new ArgumentException($"RingAttention: lse must be [{hq},{t}], got {lse.ShapeString}");
        if (hkv <= 0 || hq % hkv != 0)
            throw new ArgumentException($"RingAttention: query heads ({hq}) must be a multiple of key/value heads ({hkv})");
        // Every rank must hold a block of the same shape, or the ring's messages would not line up.
        Span<double> mine = [t, hq, hkv, d];
        var all = new double[4 * group.Size];
        group.AllGather(mine, all);
        for (int rank = 0; rank < group.Size; rank++)
            if (!all.AsSpan(4 * rank, 4).SequenceEqual(mine))
                throw new ArgumentException($"RingAttention: rank {rank} holds a block of [T,Hq,Hkv,D] = [{string.Join(",", all.AsSpan(4 * rank, 4).ToArray())}], rank {group.Rank} [{t},{hq},{hkv},{d}]: every rank must hold the same shape");
        return (t, hq, hkv, d);
    }

    private static void Same(Tensor a, Tensor like, string name)
    {
        if (!a.Shape.SequenceEqual(like.Shape))
            throw new ArgumentException($"RingAttention: {name} must have shape {like.ShapeString}, got {a.ShapeString}");
    }
}
