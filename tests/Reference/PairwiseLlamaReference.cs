using UioLlm.Kernels;
using UioLlm.Model;

namespace UioLlm.Tests.Reference;

/// <summary>
/// The Llama forward pass in double precision with attention defined pair by pair, for the long-context
/// methods: query i reads key j (j &lt;= i) at a relative distance <c>distance(layer, i, j)</c> (RoPE rotates the
/// query by that distance against the key at 0, with the table's attention factor on both), and
/// <c>visible(layer, head, i, scores)</c> picks, from the scaled scores of keys 0..i, which ones the query
/// attends to. Full attention, a Lambda mask with capped distances (LM-Infinite) and top-k retrieval (kNN
/// attention) are each one pair of functions.
/// </summary>
internal static class PairwiseLlamaReference
{
    public static double[,] Logits(LlamaWeights w, int[] ids, RopeTable table, Func<int, int, int, long> distance,
        Func<int, int, int, double[], bool[]> visible)
    {
        var c = w.Config;
        int T = ids.Length, d = c.Dim, hd = c.HeadDim;
        var emb = w.TokenEmbedding.ToArray();
        var x = new double[T][];
        for (int t = 0; t < T; t++) x[t] = Enumerable.Range(0, d).Select(i => (double)emb[ids[t] * d + i]).ToArray();
        for (int li = 0; li < w.Layers.Count; li++)
        {
            var layer = w.Layers[li];
            var n = x.Select(r => RmsNorm(r, layer.AttentionNorm.ToArray(), c.NormEps)).ToArray();
            var q = n.Select(r => MatVec(layer.Wq.ToArray(), r, c.Heads * hd)).ToArray();
            var k = n.Select(r => MatVec(layer.Wk.ToArray(), r, c.KvDim)).ToArray();
            var v = n.Select(r => MatVec(layer.Wv.ToArray(), r, c.KvDim)).ToArray();
            var attn = new double[T][];
            for (int i = 0; i < T; i++)
            {
                attn[i] = new double[c.Heads * hd];
                for (int h = 0; h < c.Heads; h++)
                {
                    int kvh = h / c.GroupSize;
                    var scores = new double[i + 1];
                    var key0 = new double[hd];
                    for (int j = 0; j <= i; j++)
                    {
                        var qr = Rotate(q[i].AsSpan(h * hd, hd), distance(li, i, j), table);
                        var kr = Rotate(k[j].AsSpan(kvh * hd, hd), 0, table);
                        double dot = 0;
                        for (int e = 0; e < hd; e++) dot += qr[e] * kr[e];
                        scores[j] = dot / Math.Sqrt(hd);
                    }
                    var seen = visible(li, h, i, scores);
                    double max = double.NegativeInfinity;
                    for (int j = 0; j <= i; j++) if (seen[j]) max = Math.Max(max, scores[j]);
                    double sum = 0;
                    for (int j = 0; j <= i; j++) if (seen[j]) sum += Math.Exp(scores[j] - max);
                    for (int j = 0; j <= i; j++)
                    {
                        if (!seen[j]) continue;
                        double p = Math.Exp(scores[j] - max) / sum;
                        for (int e = 0; e < hd; e++) attn[i][h * hd + e] += p * v[j][kvh * hd + e];
                    }
                }
            }
            for (int t = 0; t < T; t++)
            {
                var o = MatVec(layer.Wo.ToArray(), attn[t], d);
                for (int i = 0; i < d; i++) x[t][i] += o[i];
                var m = RmsNorm(x[t], layer.FfnNorm.ToArray(), c.NormEps);
                var gate = MatVec(layer.W1.ToArray(), m, c.HiddenDim);
                var up = MatVec(layer.W3.ToArray(), m, c.HiddenDim);
                var hid = gate.Select((g, i) => g / (1 + Math.Exp(-g)) * up[i]).ToArray();
                var down = MatVec(layer.W2.ToArray(), hid, d);
                for (int i = 0; i < d; i++) x[t][i] += down[i];
            }
        }
        var logits = new double[T, c.VocabSize];
        var head = (c.TiedEmbeddings ? w.TokenEmbedding : w.Output).ToArray();
        for (int t = 0; t < T; t++)
        {
            var f = RmsNorm(x[t], w.FinalNorm.ToArray(), c.NormEps);
            var l = MatVec(head, f, c.VocabSize);
            for (int j = 0; j < c.VocabSize; j++) logits[t, j] = l[j];
        }
        return logits;
    }

    /// <summary>log softmax(logits[t])[id] in double.</summary>
    public static double LogProb(double[,] logits, int t, int id)
    {
        int v = logits.GetLength(1);
        double max = double.NegativeInfinity;
        for (int j = 0; j < v; j++) max = Math.Max(max, logits[t, j]);
        double sum = 0;
        for (int j = 0; j < v; j++) sum += Math.Exp(logits[t, j] - max);
        return logits[t, id] - max - Math.Log(sum);
    }

    private static double[] Rotate(ReadOnlySpan<double> x, long position, RopeTable table)
    {
        int hd = x.Length, half = hd / 2;
        var y = new double[hd];
        for (int i = 0; i < half; i++)
        {
            double angle = position * table.InverseFrequency[i];
            double cs = Math.Cos(angle) * table.AttentionFactor, sn = Math.Sin(angle) * table.AttentionFactor;
            int a = table.Layout == RopeLayout.HalfSplit ? i : 2 * i, b = table.Layout == RopeLayout.HalfSplit ? i + half : 2 * i + 1;
            y[a] = x[a] * cs - x[b] * sn;
            y[b] = x[b] * cs + x[a] * sn;
        }
        return y;
    }

    private static double[] RmsNorm(double[] x, float[] gain, float eps)
    {
        double ms = x.Sum(z => z * z) / x.Length;
        double r = 1 / Math.Sqrt(ms + eps);
        return x.Select((z, i) => z * r * gain[i]).ToArray();
    }

    private static double[] MatVec(float[] w, double[] x, int rows)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int i = 0; i < x.Length; i++) s += w[r * x.Length + i] * x[i];
            y[r] = s;
        }
        return y;
    }
}
