namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>
/// Forward attention for one work item = (batch, kv head, query block): every query head of the GQA group
/// runs over the same packed key/value tiles with an online softmax, so the Tq x Tk matrix never exists.
/// </summary>
internal unsafe struct FlashForward
{
    public float* Q, K, V, O, Lse;
    public int Batch, Tq, Tk, Hq, Hkv, D, QueryTile, KeyTile;
    public float Scale;
    public RowSpans Spans;

    public readonly int QueryBlocks => (Tq + QueryTile - 1) / QueryTile;

    public readonly int Items => Batch * Hkv * QueryBlocks;

    public readonly void Run<TS, TV>(int item) where TS : struct, IVectorOps<TV> where TV : struct
    {
        int w = TS.Width;
        int qBlocks = QueryBlocks;
        int qb = item % qBlocks, g = item / qBlocks % Hkv, b = item / qBlocks / Hkv;
        int ratio = Hq / Hkv;
        int i0 = qb * QueryTile, nr = Math.Min(QueryTile, Tq - i0);
        int dp = TileOps.RoundUp(D, w), bcp = TileOps.RoundUp(KeyTile, w);
        int rowsAll = ratio * QueryTile;
        float c = Scale * TileOps.Log2E;

        // Scratch: running outputs, maxima and sums for every (head, row) of the item, one score tile, K^T and V tiles.
        float* oAcc = AttentionScratch.Current.Get(rowsAll * dp + 2 * rowsAll + QueryTile * bcp + D * bcp + KeyTile * dp);
        float* mRun = oAcc + rowsAll * dp, lRun = mRun + rowsAll, s = lRun + rowsAll, kt = s + QueryTile * bcp, vp = kt + D * bcp;
        Span<TileKind> kinds = ratio <= 64 ? stackalloc TileKind[ratio] : new TileKind[ratio];

        int jlo = int.MaxValue, jhi = 0;
        for (int hh = 0; hh < ratio; hh++)
        {
            Spans.KeyRange(g * ratio + hh, i0, nr, out int lo, out int hi);
            if (hi > lo) { jlo = Math.Min(jlo, lo); jhi = Math.Max(jhi, hi); }
        }
        new Span<float>(oAcc, rowsAll * dp).Clear();
        new Span<float>(mRun, rowsAll).Fill(float.NegativeInfinity);
        new Span<float>(lRun, rowsAll).Clear();

        nint qRowStride = (nint)Hq * D, kvRowStride = (nint)Hkv * D;
        float* qBlock = Q + ((nint)b * Tq + i0) * qRowStride;
        for (int j0 = jlo; j0 < jhi; j0 += KeyTile)
        {
            int nc = Math.Min(KeyTile, jhi - j0), ncp = TileOps.RoundUp(nc, w);
            bool anyVisible = false;
            for (int hh = 0; hh < ratio; hh++)
            {
                kinds[hh] = Spans.Classify(g * ratio + hh, i0, nr, j0, j0 + nc);
                anyVisible |= kinds[hh] != TileKind.Hidden;
            }
            if (!anyVisible) continue;

            float* kTile = K + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D;
            float* vTile = V + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D;
            TileOps.PackTransposed(kt, bcp, kTile, kvRowStride, nc, ncp, D);
            TileOps.PackRows(vp, dp, vTile, kvRowStride, nc, D);

            for (int hh = 0; hh < ratio; hh++)
            {
                if (kinds[hh] == TileKind.Hidden) continue;
                int h = g * ratio + hh;
                // S = Q_h K^T for the block, straight from q's rows (broadcast reads need no padding).
                TileGemm.Run<TS, TV>(nr, ncp / w, D, qBlock + (nint)h * D, (int)qRowStride, 1, kt, bcp, s, bcp, accumulate: false);
                float* oh = oAcc + hh * QueryTile * dp;
                float* mh = mRun + hh * QueryTile, lh = lRun + hh * QueryTile;
                for (int r = 0; r < nr; r++)
                {
                    float* sr = s + r * bcp;
                    RowSpans.MaskRow(sr, j0, nc, ncp, kinds[hh], Spans.Row(h, i0 + r));
                    TileOps.OnlineSoftmaxRow<TS, TV>(sr, ncp, c, ref mh[r], ref lh[r], oh + r * dp, dp);
                }
                // O_h += P V.
                TileGemm.Run<TS, TV>(nr, dp / w, nc, s, bcp, 1, vp, dp, oh, dp, accumulate: true);
            }
        }

        for (int hh = 0; hh < ratio; hh++)
        {
            int h = g * ratio + hh;
            for (int r = 0; r < nr; r++)
            {
                float* dst = O + (((nint)b * Tq + i0 + r) * Hq + h) * D;
                float* acc = oAcc + (hh * QueryTile + r) * dp;
                float l = lRun[hh * QueryTile + r];
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
                *lse = (mRun[hh * QueryTile + r] + MathF.Log2(l)) * TileOps.Ln2;
            }
        }
    }
}
