using System.Runtime.CompilerServices;

namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>Packing and row-wise softmax steps shared by the forward and backward tiles.</summary>
internal static unsafe class TileOps
{
    public const float Log2E = 1.4426950408889634f;
    public const float Ln2 = 0.6931471805599453f;

    public static int RoundUp(int n, int w) => (n + w - 1) / w * w;

    /// <summary>dst[d, c] = src[c][d] for c &lt; n (rows of src <paramref name="srcStride"/> apart); columns n..nPadded-1 zero.</summary>
    public static void PackTransposed(float* dst, int ldDst, float* src, nint srcStride, int n, int nPadded, int d)
    {
        for (int c = 0; c < n; c++)
        {
            float* row = src + c * srcStride;
            for (int k = 0; k < d; k++) dst[k * ldDst + c] = row[k];
        }
        for (int k = 0; k < d; k++)
            for (int c = n; c < nPadded; c++) dst[k * ldDst + c] = 0f;
    }

    /// <summary>dst[r, 0..d) = src[r][0..d), zero-padded to <paramref name="ldDst"/> columns.</summary>
    public static void PackRows(float* dst, int ldDst, float* src, nint srcStride, int rows, int d)
    {
        for (int r = 0; r < rows; r++)
        {
            new ReadOnlySpan<float>(src + r * srcStride, d).CopyTo(new Span<float>(dst + r * ldDst, d));
            new Span<float>(dst + r * ldDst + d, ldDst - d).Clear();
        }
    }

    /// <summary>dst[r][0..d) += src[r, 0..d) for each row.</summary>
    public static void AddRows(float* dst, nint dstStride, float* src, int ldSrc, int rows, int d)
    {
        for (int r = 0; r < rows; r++)
        {
            float* o = dst + r * dstStride, s = src + r * ldSrc;
            for (int k = 0; k < d; k++) o[k] += s[k];
        }
    }

    /// <summary>
    /// One online-softmax step for a query row over a key tile: scores become p = 2^(s*c - mNew), the running
    /// max m and sum l update, and the running output row is rescaled by 2^(m - mNew). c = scale * log2(e).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void OnlineSoftmaxRow<TS, TV>(float* s, int width, float c, ref float m, ref float l, float* outRow, int outWidth)
        where TS : struct, IVectorOps<TV> where TV : struct
    {
        int w = TS.Width;
        TV cv = TS.Splat(c);
        TV mx = TS.Splat(float.NegativeInfinity);
        for (int v = 0; v < width; v += w)
        {
            TV x = TS.Mul(TS.Load(s + v), cv);
            TS.Store(s + v, x);
            mx = TS.Max(mx, x);
        }
        float rowMax = TS.MaxAcross(mx);
        if (float.IsNegativeInfinity(rowMax))
        {
            // Nothing visible in this tile for this row: it contributes nothing.
            new Span<float>(s, width).Clear();
            return;
        }
        float mNew = MathF.Max(m, rowMax);
        float alpha = float.Exp2(m - mNew);
        TV shift = TS.Splat(-mNew);
        TV sum = TS.Zero;
        for (int v = 0; v < width; v += w)
        {
            TV p = TS.Exp2(TS.Add(TS.Load(s + v), shift));
            TS.Store(s + v, p);
            sum = TS.Add(sum, p);
        }
        l = l * alpha + TS.SumAcross(sum);
        if (alpha != 1f)
        {
            TV av = TS.Splat(alpha);
            for (int v = 0; v < outWidth; v += w) TS.Store(outRow + v, TS.Mul(TS.Load(outRow + v), av));
        }
        m = mNew;
    }

    /// <summary>Recomputed probabilities of a row from its saved log-sum-exp: p = 2^(s*c - lse2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ProbabilityRow<TS, TV>(float* s, int width, float c, float lse2)
        where TS : struct, IVectorOps<TV> where TV : struct
    {
        int w = TS.Width;
        TV cv = TS.Splat(c), shift = TS.Splat(-lse2);
        for (int v = 0; v < width; v += w)
            TS.Store(s + v, TS.Exp2(TS.MulAdd(TS.Load(s + v), cv, shift)));
    }

    /// <summary>dS = P * (dP - Di) * scale, written over dP.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScoreGradientRow<TS, TV>(float* p, float* dp, int width, float di, float scale)
        where TS : struct, IVectorOps<TV> where TV : struct
    {
        int w = TS.Width;
        TV dv = TS.Splat(di), sv = TS.Splat(scale);
        for (int v = 0; v < width; v += w)
            TS.Store(dp + v, TS.Mul(TS.Mul(TS.Load(p + v), TS.Sub(TS.Load(dp + v), dv)), sv));
    }
}
