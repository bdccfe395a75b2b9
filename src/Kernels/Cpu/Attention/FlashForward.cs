namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>
/// Forward attention for one work item = (batch, kv head, query block). Scores are computed transposed,
/// S^T = K Q^T ([keys, queries]): Q^T is packed once per item, K and V tiles are copied contiguous, and the online
/// softmax (running max and sum per query) runs down the key rows with whole vectors of queries at a time,
/// so it needs no horizontal reductions. Every query head of the GQA group reuses the same K/V tile.
/// The Tq x Tk matrix never exists; only one [key tile, query block] score tile per thread.
/// </summary>
internal unsafe struct FlashForward
{
    public float* Q, K, V, O, Lse;
    public int Batch, Tq, Tk, Hq, Hkv, D, QueryTile, KeyTile;
    public float Scale;
    public RowSpans Spans;

    public readonly int QueryBlocks => (Tq + QueryTile - 1) / QueryTile;

    public readonly int Items => Batch * Hkv * QueryBlocks;

    public readonly void Run<TS, TV>(int item) where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        int qBlocks = QueryBlocks;
        int qb = item % qBlocks, g = item / qBlocks % Hkv, b = item / qBlocks / Hkv;
        int ratio = Hq / Hkv;
        int i0 = qb * QueryTile, nr = Math.Min(QueryTile, Tq - i0);
        int nrp = TileOps.RoundUp(nr, w);
        int dp = TileOps.RoundUp(D, w);
        float c = Scale * TileOps.Log2E;
        nint qRowStride = (nint)Hq * D, kvRowStride = (nint)Hkv * D;

        // Scratch: Q^T per head, running output rows, running max / sum / rescale factors per query, one score tile,
        // and contiguous copies of the K and V tile (in place their rows lie Hkv*D apart, which maps a tile onto few cache sets).
        float* qt = AttentionScratch.Current.Get(ratio * D * nrp + ratio * nr * dp + 3 * ratio * nrp + KeyTile * nrp + KeyTile * D + KeyTile * dp);
        float* oAcc = qt + ratio * D * nrp, mRun = oAcc + ratio * nr * dp, lRun = mRun + ratio * nrp, alpha = lRun + ratio * nrp;
        float* st = alpha + ratio * nrp, kp = st + KeyTile * nrp, vp = kp + KeyTile * D;
        Span<TileKind> kinds = ratio <= 64 ? stackalloc TileKind[ratio] : new TileKind[ratio];

        int jlo = int.MaxValue, jhi = 0;
        for (int hh = 0; hh < ratio; hh++)
        {
            int h = g * ratio + hh;
            Spans.KeyRange(h, i0, nr, out int lo, out int hi);
            if (hi > lo) { jlo = Math.Min(jlo, lo); jhi = Math.Max(jhi, hi); }
            // Q^T carries the factor scale * log2(e), so scores come out ready for 2^x.
            TileOps.PackTransposed(qt + hh * D * nrp, nrp, Q + ((nint)b * Tq + i0) * qRowStride + (nint)h * D, qRowStride, nr, nrp, D, c);
        }
        new Span<float>(oAcc, ratio * nr * dp).Clear();
        new Span<float>(mRun, ratio * nrp).Fill(float.NegativeInfinity);
        new Span<float>(lRun, ratio * nrp).Clear();

        for (int j0 = jlo; j0 < jhi; j0 += KeyTile)
        {
            int nc = Math.Min(KeyTile, jhi - j0);
            bool anyVisible = false;
            for (int hh = 0; hh < ratio; hh++)
            {
                kinds[hh] = Spans.Classify(g * ratio + hh, i0, nr, j0, j0 + nc);
                anyVisible |= kinds[hh] != TileKind.Hidden;
            }
            if (!anyVisible) continue;

            TileOps.PackRows(kp, D, K + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D, kvRowStride, nc, D);
            TileOps.PackRows(vp, dp, V + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D, kvRowStride, nc, D);

            for (int hh = 0; hh < ratio; hh++)
            {
                if (kinds[hh] == TileKind.Hidden) continue;
                int h = g * ratio + hh;
                // S^T = K Q_h^T: key rows broadcast, query columns as vectors.
                TileGemm.Run<TS, TV>(nc, nrp / w, D, kp, D, 1, qt + hh * D * nrp, nrp, st, nrp, accumulate: false);
                if (kinds[hh] == TileKind.Partial)
                    for (int r = 0; r < nr; r++) RowSpans.MaskColumn(st, nrp, r, j0, nc, Spans.Row(h, i0 + r));
                float* oh = oAcc + hh * nr * dp;
                TileOps.OnlineSoftmaxColumns<TS, TV>(st, nrp, nc, nrp, mRun + hh * nrp, lRun + hh * nrp, alpha);
                for (int r = 0; r < nr; r++)
                    if (alpha[r] != 1f) TileOps.ScaleRow<TS, TV>(oh + r * dp, dp, alpha[r]);
                // O_h += P V, reading P = (S^T)^T through strides.
                TileGemm.Run<TS, TV>(nr, dp / w, nc, st, 1, nrp, vp, dp, oh, dp, accumulate: true);
            }
        }

        for (int hh = 0; hh < ratio; hh++)
        {
            int h = g * ratio + hh;
            for (int r = 0; r < nr; r++)
            {
                float* dst = O + (((nint)b * Tq + i0 + r) * Hq + h) * D;
                float* acc = oAcc + (hh * nr + r) * dp;
                float l = lRun[hh * nrp + r];
                float* lse = Lse + ((nint)b * Hq + h) * Tq + i0 + r;
                if (l == 0f)
                {
                    // The query sees no key at all.
                    new Span<float>(dst, D).Clear();
                    *lse = float.NegativeInfinity;
                    continue;
                }
                float inv = 1f / l;
                for (int k = 0; k < D; k++) dst[k] = acc[k] * inv;
                *lse = (mRun[hh * nrp + r] + MathF.Log2(l)) * TileOps.Ln2;
            }
        }
    }
}
