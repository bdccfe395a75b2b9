namespace UioLlm.Model.Methods;

/// <summary>
/// Adds extra keys to attention outputs computed by the kernel: given the kernel's o [T, Hq, D] and lse [Hq, T]
/// over one set of keys, and for each (query, head) further scores (already scaled) with their value rows,
/// returns the softmax over the union, exactly (log-sum-exp merge in double).
/// </summary>
internal static class HostAttention
{
    /// <param name="o">Kernel output [T, Hq, D], overwritten with the merged output.</param>
    /// <param name="lse">Kernel log-sum-exp [Hq, T] (natural log, -inf when it saw no key).</param>
    /// <param name="values">Host values [rows, Hkv, D].</param>
    /// <param name="extra">(t, h) -> the extra (score, value row) pairs; empty for none.</param>
    public static void Merge(float[] o, float[] lse, float[] values, int tokens, int heads, int kvHeads, int d,
        Func<int, int, IReadOnlyList<(double Score, int Row)>> extra)
    {
        int group = heads / kvHeads;
        var acc = new double[d];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                var more = extra(t, h);
                if (more.Count == 0) continue;
                double kernelLse = lse[h * tokens + t];
                double max = kernelLse;
                foreach (var (s, _) in more) max = Math.Max(max, s);
                double wKernel = double.IsNegativeInfinity(kernelLse) ? 0 : Math.Exp(kernelLse - max);
                double total = wKernel;
                int baseO = (t * heads + h) * d;
                for (int i = 0; i < d; i++) acc[i] = wKernel * o[baseO + i];
                int kv = h / group;
                foreach (var (s, row) in more)
                {
                    double w = Math.Exp(s - max);
                    total += w;
                    int baseV = (row * kvHeads + kv) * d;
                    for (int i = 0; i < d; i++) acc[i] += w * values[baseV + i];
                }
                for (int i = 0; i < d; i++) o[baseO + i] = (float)(acc[i] / total);
            }
    }

    public static double Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }
}
