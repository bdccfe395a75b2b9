namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>
/// Backward attention (FlashAttention-2 style) for one work item = (batch, kv head, key segment). The item owns
/// dK/dV of its key blocks (segment s takes blocks s, s+S, s+2S, ...). dQ of its query heads goes straight to dq
/// for segment 0 and to a private partial buffer for the others, summed afterwards, so no two items write the same memory.
/// </summary>
internal unsafe struct FlashBackward
{
    public float* Q, K, V, O, DO, Lse, DQ, DK, DV, DQPartials;
    public int Batch, Tq, Tk, Hq, Hkv, D, QueryTile, KeyTile, Segments;
    public float Scale;
    public RowSpans Spans;

    public readonly int KeyBlocks => (Tk + KeyTile - 1) / KeyTile;

    public readonly int Items => Batch * Hkv * Segments;

    public readonly int QueryLength => Batch * Tq * Hq * D;

    public readonly void Run<TS, TV>(int item) where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        int seg = item % Segments, g = item / Segments % Hkv, b = item / Segments / Hkv;
        int ratio = Hq / Hkv;
        int dp = TileOps.RoundUp(D, w), bcp = TileOps.RoundUp(KeyTile, w), br = QueryTile;
        float c = Scale * TileOps.Log2E;

        float* lse2 = AttentionScratch.Current.Get(2 * ratio * Tq + 2 * D * bcp + 3 * KeyTile * dp + 3 * br * dp + 2 * br * bcp);
        float* di = lse2 + ratio * Tq, kt = di + ratio * Tq, vt = kt + D * bcp, kp = vt + D * bcp;
        float* dkAcc = kp + KeyTile * dp, dvAcc = dkAcc + KeyTile * dp;
        float* qp = dvAcc + KeyTile * dp, dop = qp + br * dp, dqt = dop + br * dp, p = dqt + br * dp, ds = p + br * bcp;

        nint qRowStride = (nint)Hq * D, kvRowStride = (nint)Hkv * D;
        // Per query row: its lse in base 2 and Di = rowsum(dO * O).
        for (int hh = 0; hh < ratio; hh++)
        {
            int h = g * ratio + hh;
            for (int i = 0; i < Tq; i++)
            {
                float l = Lse[((nint)b * Hq + h) * Tq + i];
                lse2[hh * Tq + i] = float.IsNegativeInfinity(l) ? float.NegativeInfinity : l * TileOps.Log2E;
                nint at = ((nint)b * Tq + i) * qRowStride + (nint)h * D;
                float sum = 0f;
                for (int k = 0; k < D; k++) sum += DO[at + k] * O[at + k];
                di[hh * Tq + i] = sum;
            }
        }

        float* dqTarget = DQ == null ? null : seg == 0 ? DQ : DQPartials + (nint)(seg - 1) * QueryLength;
        int qBlocks = (Tq + br - 1) / br;
        for (int kb = seg; kb < KeyBlocks; kb += Segments)
        {
            int j0 = kb * KeyTile, nc = Math.Min(KeyTile, Tk - j0), ncp = TileOps.RoundUp(nc, w);
            float* kTile = K + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D;
            float* vTile = V + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D;
            bool packed = false;
            for (int hh = 0; hh < ratio; hh++)
            {
                int h = g * ratio + hh;
                for (int qb = 0; qb < qBlocks; qb++)
                {
                    int i0 = qb * br, nr = Math.Min(br, Tq - i0);
                    var kind = Spans.Classify(h, i0, nr, j0, j0 + nc);
                    if (kind == TileKind.Hidden) continue;
                    if (!packed)
                    {
                        TileOps.PackTransposed(kt, bcp, kTile, kvRowStride, nc, ncp, D);
                        TileOps.PackTransposed(vt, bcp, vTile, kvRowStride, nc, ncp, D);
                        TileOps.PackRows(kp, dp, kTile, kvRowStride, nc, D);
                        new Span<float>(dkAcc, 2 * KeyTile * dp).Clear();
                        packed = true;
                    }
                    float* qRows = Q + ((nint)b * Tq + i0) * qRowStride + (nint)h * D;
                    float* doRows = DO + ((nint)b * Tq + i0) * qRowStride + (nint)h * D;
                    TileOps.PackRows(qp, dp, qRows, qRowStride, nr, D);
                    TileOps.PackRows(dop, dp, doRows, qRowStride, nr, D);

                    // P = exp(S * scale - lse), recomputed.
                    TileGemm.Run<TS, TV>(nr, ncp / w, D, qp, dp, 1, kt, bcp, p, bcp, accumulate: false);
                    for (int r = 0; r < nr; r++)
                    {
                        float* pr = p + r * bcp;
                        float l2 = lse2[hh * Tq + i0 + r];
                        if (float.IsNegativeInfinity(l2)) { new Span<float>(pr, ncp).Clear(); continue; }
                        RowSpans.MaskRow(pr, j0, nc, ncp, kind, Spans.Row(h, i0 + r));
                        TileOps.ProbabilityRow<TS, TV>(pr, ncp, c, l2);
                    }
                    // dP = dO V^T, then dS = P (dP - Di) * scale in place.
                    TileGemm.Run<TS, TV>(nr, ncp / w, D, dop, dp, 1, vt, bcp, ds, bcp, accumulate: false);
                    for (int r = 0; r < nr; r++)
                        TileOps.ScoreGradientRow<TS, TV>(p + r * bcp, ds + r * bcp, ncp, di[hh * Tq + i0 + r], Scale);

                    // dV += P^T dO and dK += dS^T Q (A read transposed: row stride 1, column stride bcp).
                    if (DV != null) TileGemm.Run<TS, TV>(nc, dp / w, nr, p, 1, bcp, dop, dp, dvAcc, dp, accumulate: true);
                    if (DK != null) TileGemm.Run<TS, TV>(nc, dp / w, nr, ds, 1, bcp, qp, dp, dkAcc, dp, accumulate: true);
                    if (dqTarget != null)
                    {
                        // dQ += dS K.
                        TileGemm.Run<TS, TV>(nr, dp / w, nc, ds, bcp, 1, kp, dp, dqt, dp, accumulate: false);
                        TileOps.AddRows<TS, TV>(dqTarget + ((nint)b * Tq + i0) * qRowStride + (nint)h * D, qRowStride, dqt, dp, nr, D);
                    }
                }
            }
            if (!packed) continue;
            if (DK != null) TileOps.AddRows<TS, TV>(DK + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D, kvRowStride, dkAcc, dp, nc, D);
            if (DV != null) TileOps.AddRows<TS, TV>(DV + ((nint)b * Tk + j0) * kvRowStride + (nint)g * D, kvRowStride, dvAcc, dp, nc, D);
        }
    }
}
