namespace UioLlm.Tests.Reference;

/// <summary>
/// Dense attention in double precision, written for clarity: explicit score matrices, an explicit boolean
/// mask [Hq, Tq, Tk] (the same for every batch element), softmax by definition. Layouts match the kernels:
/// q and o [B, Tq, Hq, D], k and v [B, Tk, Hkv, D], lse [B, Hq, Tq]; query head h reads kv head h / (Hq / Hkv).
/// </summary>
public sealed record AttentionProblem(int Batch, int Tq, int Tk, int Hq, int Hkv, int D, bool[,,] Mask, double Scale)
{
    public int Q(int b, int i, int h, int d) => ((b * Tq + i) * Hq + h) * D + d;
    public int KV(int b, int j, int g, int d) => ((b * Tk + j) * Hkv + g) * D + d;
    public int Lse(int b, int h, int i) => (b * Hq + h) * Tq + i;
    public int KvHead(int h) => h / (Hq / Hkv);
}

public static class AttentionReference
{
    /// <summary>o and lse; a query that sees no key gets o = 0 and lse = -inf.</summary>
    public static (double[] O, double[] Lse) Forward(AttentionProblem p, double[] q, double[] k, double[] v)
    {
        var o = new double[p.Batch * p.Tq * p.Hq * p.D];
        var lse = new double[p.Batch * p.Hq * p.Tq];
        for (int b = 0; b < p.Batch; b++)
            for (int h = 0; h < p.Hq; h++)
                for (int i = 0; i < p.Tq; i++)
                {
                    var probs = Probabilities(p, q, k, b, h, i, out double logSumExp);
                    lse[p.Lse(b, h, i)] = logSumExp;
                    for (int j = 0; j < p.Tk; j++)
                        for (int d = 0; d < p.D; d++)
                            o[p.Q(b, i, h, d)] += probs[j] * v[p.KV(b, j, p.KvHead(h), d)];
                }
        return (o, lse);
    }

    /// <summary>Analytic gradients of sum(o * dO): dq, dk, dv (double, by the textbook softmax formulas).</summary>
    public static (double[] Dq, double[] Dk, double[] Dv) Backward(AttentionProblem p, double[] q, double[] k, double[] v, double[] dO)
    {
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        for (int b = 0; b < p.Batch; b++)
            for (int h = 0; h < p.Hq; h++)
                for (int i = 0; i < p.Tq; i++)
                {
                    int g = p.KvHead(h);
                    var probs = Probabilities(p, q, k, b, h, i, out _);
                    // dP_j = dO_i . v_j; dS_j = P_j (dP_j - sum_l P_l dP_l).
                    var dP = new double[p.Tk];
                    double weighted = 0;
                    for (int j = 0; j < p.Tk; j++)
                    {
                        for (int d = 0; d < p.D; d++) dP[j] += dO[p.Q(b, i, h, d)] * v[p.KV(b, j, g, d)];
                        weighted += probs[j] * dP[j];
                    }
                    for (int j = 0; j < p.Tk; j++)
                    {
                        double dS = probs[j] * (dP[j] - weighted);
                        for (int d = 0; d < p.D; d++)
                        {
                            dv[p.KV(b, j, g, d)] += probs[j] * dO[p.Q(b, i, h, d)];
                            dq[p.Q(b, i, h, d)] += p.Scale * dS * k[p.KV(b, j, g, d)];
                            dk[p.KV(b, j, g, d)] += p.Scale * dS * q[p.Q(b, i, h, d)];
                        }
                    }
                }
        return (dq, dk, dv);
    }

    /// <summary>Softmax over the visible keys of query (b, h, i); all zero (and lse = -inf) when none is visible.</summary>
    private static double[] Probabilities(AttentionProblem p, double[] q, double[] k, int b, int h, int i, out double lse)
    {
        int g = p.KvHead(h);
        var scores = new double[p.Tk];
        double max = double.NegativeInfinity;
        for (int j = 0; j < p.Tk; j++)
        {
            if (!p.Mask[h, i, j]) { scores[j] = double.NegativeInfinity; continue; }
            double s = 0;
            for (int d = 0; d < p.D; d++) s += q[p.Q(b, i, h, d)] * k[p.KV(b, j, g, d)];
            scores[j] = s * p.Scale;
            max = Math.Max(max, scores[j]);
        }
        var probs = new double[p.Tk];
        if (double.IsNegativeInfinity(max)) { lse = double.NegativeInfinity; return probs; }
        double sum = 0;
        for (int j = 0; j < p.Tk; j++) sum += p.Mask[h, i, j] ? Math.Exp(scores[j] - max) : 0;
        for (int j = 0; j < p.Tk; j++) probs[j] = p.Mask[h, i, j] ? Math.Exp(scores[j] - max) / sum : 0;
        lse = max + Math.Log(sum);
        return probs;
    }
}
