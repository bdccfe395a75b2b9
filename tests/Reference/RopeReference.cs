using UioLlm.Kernels;

namespace UioLlm.Tests.Reference;

/// <summary>
/// Rotary embedding over x [B, T, H, D] (B = 1 for rank 3): each pair (a, b) of token t is rotated by
/// angle positions[t] * invFreq[i] and scaled by the attention factor. positions has T (shared by every
/// batch element) or B*T entries.
/// </summary>
public static class RopeReference
{
    public static double[] Forward(double[] x, int batch, int tokens, int heads, int d, int[] positions, RopeTable table)
    {
        var y = new double[x.Length];
        int half = d / 2;
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < tokens; t++)
            {
                int pos = positions.Length == tokens ? positions[t] : positions[b * tokens + t];
                for (int h = 0; h < heads; h++)
                {
                    int baseIndex = ((b * tokens + t) * heads + h) * d;
                    for (int i = 0; i < half; i++)
                    {
                        double angle = pos * table.InverseFrequency[i];
                        double c = Math.Cos(angle) * table.AttentionFactor, s = Math.Sin(angle) * table.AttentionFactor;
                        int ia = table.Layout == RopeLayout.HalfSplit ? i : 2 * i;
                        int ib = table.Layout == RopeLayout.HalfSplit ? i + half : 2 * i + 1;
                        double xa = x[baseIndex + ia], xb = x[baseIndex + ib];
                        y[baseIndex + ia] = xa * c - xb * s;
                        y[baseIndex + ib] = xb * c + xa * s;
                    }
                }
            }
        return y;
    }
}
