using UioLlm.Model;

namespace UioLlm.Tests.Reference;

/// <summary>
/// The Llama forward pass written for clarity in double precision: embedding, then per layer
/// x += Wo attn(rope(Wq n), rope(Wk n), Wv n) with n = rmsnorm(x), x += W2 (silu(W1 n) * W3 n),
/// final norm and the output head. RoPE rotates (i, i + hd/2) pairs (Hugging Face order).
/// </summary>
internal static class LlamaReference
{
    public static double[,] Logits(LlamaWeights w, int[] ids) => Logits(w, ids, null, null);

    /// <summary>
    /// Logits with a key/value prefix per layer (UIO's memory): memoryK[layer][m] and memoryV[layer][m] are
    /// un-rotated [kv_dim] rows. The sequence is [memory ; tokens] with RoPE from position 0, so memory key m
    /// is rotated at m and token t sits at M + t; in a global layer every token sees all memory and, causally,
    /// the tokens; a local layer (li &lt; LocalLayers) sees the positions M + t - LocalWindow + 1 .. M + t, memory rows included.
    /// </summary>
    public static double[,] Logits(LlamaWeights w, int[] ids, double[][][]? memoryK, double[][][]? memoryV)
    {
        var c = w.Config;
        int memory = memoryK?[0].Length ?? 0;
        int T = ids.Length, d = c.Dim, hd = c.HeadDim;
        var emb = w.TokenEmbedding.ToArray();
        var x = new double[T][];
        for (int t = 0; t < T; t++) x[t] = Enumerable.Range(0, d).Select(i => (double)emb[ids[t] * d + i]).ToArray();

        for (int li = 0; li < w.Layers.Count; li++)
        {
            var layer = w.Layers[li];
            var n = x.Select(r => RmsNorm(r, layer.AttentionNorm.ToArray(), c.NormEps)).ToArray();
            var q = n.Select(r => AddBias(MatVec(layer.Wq.ToArray(), r, c.Heads * hd), layer.Bq)).ToArray();
            var k = n.Select(r => AddBias(MatVec(layer.Wk.ToArray(), r, c.KvDim), layer.Bk)).ToArray();
            var v = n.Select(r => AddBias(MatVec(layer.Wv.ToArray(), r, c.KvDim), layer.Bv)).ToArray();
            for (int t = 0; t < T; t++)
            {
                Rope(q[t], c.Heads, hd, memory + t, c);
                Rope(k[t], c.KvHeads, hd, memory + t, c);
            }
            if (memory > 0)
            {
                // Keys and values of [memory ; tokens]; memory keys rotated at their own positions 0..M-1.
                var mk = memoryK![li].Select((row, m) => { var r = (double[])row.Clone(); Rope(r, c.KvHeads, hd, m, c); return r; });
                k = mk.Concat(k).ToArray();
                v = memoryV![li].Concat(v).ToArray();
            }
            var attn = new double[T][];
            for (int t = 0; t < T; t++)
            {
                attn[t] = new double[c.Heads * hd];
                for (int h = 0; h < c.Heads; h++)
                {
                    int kvh = h / c.GroupSize;
                    var scores = new double[memory + t + 1];
                    for (int s = 0; s <= memory + t; s++)
                    {
                        // A local layer's window counts positions over [memory ; tokens]: memory row s sits at position s.
                        bool hidden = li < c.LocalLayers ? (memory + t) - s >= c.LocalWindow : false;
                        if (hidden) { scores[s] = double.NegativeInfinity; continue; }
                        double dot = 0;
                        for (int i = 0; i < hd; i++) dot += q[t][h * hd + i] * k[s][kvh * hd + i];
                        scores[s] = dot / Math.Sqrt(hd);
                    }
                    double max = scores.Max(), sum = scores.Sum(z => Math.Exp(z - max));
                    for (int s = 0; s <= memory + t; s++)
                    {
                        double p = Math.Exp(scores[s] - max) / sum;
                        for (int i = 0; i < hd; i++) attn[t][h * hd + i] += p * v[s][kvh * hd + i];
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
        var head = w.Output.ToArray();
        for (int t = 0; t < T; t++)
        {
            var f = RmsNorm(x[t], w.FinalNorm.ToArray(), c.NormEps);
            var l = MatVec(head, f, c.VocabSize);
            for (int j = 0; j < c.VocabSize; j++) logits[t, j] = l[j];
        }
        return logits;
    }

    private static double[] RmsNorm(double[] x, float[] gain, float eps)
    {
        double ms = x.Sum(z => z * z) / x.Length;
        double r = 1 / Math.Sqrt(ms + eps);
        return x.Select((z, i) => z * r * gain[i]).ToArray();
    }

    /// <summary>y = W x with W [rows, x.Length] row-major.</summary>
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

    private static double[] AddBias(double[] y, UioLlm.Kernels.Tensor? bias)
    {
        if (bias is null) return y;
        var b = bias.ToArray();
        for (int i = 0; i < y.Length; i++) y[i] += b[i];
        return y;
    }

    /// <summary>
    /// The inverse frequency of pair i: theta^(-2i/hd), or with Llama 3 scaling (transformers'
    /// _compute_llama3_parameters, written out here independently of RopeTable) its rescaled value.
    /// </summary>
    public static double InverseFrequency(LlamaConfig c, int i, int hd)
    {
        double inv = Math.Pow(c.RopeTheta, -2.0 * i / hd);
        if (c.RopeScaling is not { Kind: UioLlm.Kernels.RopeScalingKind.Llama3 } s) return inv;
        double wavelength = 2 * Math.PI / inv;
        double lowWl = s.OriginalContext / s.LowFreqFactor, highWl = s.OriginalContext / s.HighFreqFactor;
        if (wavelength < highWl) return inv;
        if (wavelength > lowWl) return inv / s.Factor;
        double smooth = (s.OriginalContext / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        return (1 - smooth) * inv / s.Factor + smooth * inv;
    }

    private static void Rope(double[] v, int heads, int hd, int pos, LlamaConfig c)
    {
        if (c.RopeScaling is { Kind: not (UioLlm.Kernels.RopeScalingKind.None or UioLlm.Kernels.RopeScalingKind.Llama3) })
            throw new NotSupportedException($"LlamaReference: RoPE scaling {c.RopeScaling.Kind}");
        int half = hd / 2;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
            {
                double angle = pos * InverseFrequency(c, i, hd);
                double a = v[h * hd + i], b = v[h * hd + i + half];
                v[h * hd + i] = a * Math.Cos(angle) - b * Math.Sin(angle);
                v[h * hd + i + half] = a * Math.Sin(angle) + b * Math.Cos(angle);
            }
    }
}
