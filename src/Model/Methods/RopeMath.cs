using UioLlm.Kernels;

namespace UioLlm.Model.Methods;

/// <summary>
/// RoPE on the host for one head vector at any (fractional-free) position, in the table's pair layout and with
/// its attention factor: the same rotation as the kernel's <c>Rope</c>. Methods that give one query different
/// positions against different keys (LM-Infinite's distance cap, kNN retrieval) score with it.
/// </summary>
public static class RopeMath
{
    /// <summary>dst = rotate(src, position) for a head of <c>table.HeadDim</c> values.</summary>
    public static void Rotate(ReadOnlySpan<float> src, Span<float> dst, long position, RopeTable table)
    {
        int d = table.HeadDim, half = d / 2;
        if (src.Length < d || dst.Length < d) throw new ArgumentException($"RopeMath.Rotate: head of {d} values expected, got {src.Length} -> {dst.Length}");
        var inv = table.InverseFrequency;
        double f = table.AttentionFactor;
        for (int i = 0; i < half; i++)
        {
            double angle = position * inv[i];
            double c = Math.Cos(angle) * f, s = Math.Sin(angle) * f;
            int a = table.Layout == RopeLayout.HalfSplit ? i : 2 * i;
            int b = table.Layout == RopeLayout.HalfSplit ? i + half : 2 * i + 1;
            double x0 = src[a], x1 = src[b];
            dst[a] = (float)(x0 * c - x1 * s);
            dst[b] = (float)(x1 * c + x0 * s);
        }
    }
}
