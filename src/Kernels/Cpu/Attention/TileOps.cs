using System.Runtime.CompilerServices;

namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>Packing and row-wise softmax steps shared by the forward and backward tiles.</summary>
internal static unsafe class TileOps
{
    public const float Log2E = 1.4426950408889634f;
    public const float Ln2 = 0.6931471805599453f;

    public static int RoundUp(int n, int w) => (n + w - 1) / w * w;

    /// <summary>dst[d, c] = factor * src[c][d] for c &lt; n (rows of src <paramref name="srcStride"/> apart); columns n..nPadded-1 zero.</summary>
    public static void PackTransposed(float* dst, int ldDst, float* src, nint srcStride, int n, int nPadded, int d, float factor = 1f)
    {
        for (int c = 0; c < n; c++)
        {
            float* row = src + c * srcStride;
            for (int k = 0; k < d; k++) dst[k * ldDst + c] = factor * row[k];
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
    public static void AddRows<TS, TV>(float* dst, nint dstStride, float* src, int ldSrc, int rows, int d)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        for (int r = 0; r < rows; r++)
        {
            float* o = dst + r * dstStride, s = src + r * ldSrc;
            int k = 0;
            for (; k + w <= d; k += w) TS.Store(TS.Add(TS.Load(o + k), TS.Load(s + k)), o + k);
            for (; k < d; k++) o[k] += s[k];
        }
    }

    /// <summary>
    /// One online-softmax step over a transposed score tile st [keys, queries] (rows <paramref name="ld"/> apart)
    /// holding scores already in base-2 units (s * scale * log2(e)): per query column, scores become
    /// p = 2^(s - mNew), the running max m and sum l update, and alpha = 2^(m - mNew) is returned for
    /// rescaling that query's output row.
    /// A query with nothing visible so far keeps m = -inf, l = 0 and gets p = 0 (Exp2 maps NaN and -inf to 0).
    /// </summary>
    public static void OnlineSoftmaxColumns<TS, TV>(float* st, int ld, int keys, int queries, float* m, float* l, float* alpha)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        for (int q = 0; q < queries; q += w)
        {
            TV mx = TS.Splat(float.NegativeInfinity);
            for (int k = 0; k < keys; k++) mx = TS.Max(mx, TS.Load(st + k * ld + q));
            TV mOld = TS.Load(m + q);
            TV mNew = TS.Max(mOld, mx);
            TV sum = TS.Zero;
            for (int k = 0; k < keys; k++)
            {
                float* s = st + k * ld + q;
                TV p = VectorMath.Exp2<TS, TV>(TS.Sub(TS.Load(s), mNew));
                TS.Store(p, s);
                sum = TS.Add(sum, p);
            }
            TV a = VectorMath.Exp2<TS, TV>(TS.Sub(mOld, mNew));
            TS.Store(a, alpha + q);
            TS.Store(TS.MulAdd(TS.Load(l + q), a, sum), l + q);
            TS.Store(mNew, m + q);
        }
    }

    /// <summary>row[0..width) *= s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaleRow<TS, TV>(float* row, int width, float s)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        TV sv = TS.Splat(s);
        for (int v = 0; v < width; v += TS.Count) TS.Store(TS.Mul(TS.Load(row + v), sv), row + v);
    }

    /// <summary>Recomputed probabilities of a row from its saved log-sum-exp: p = 2^(s*c - lse2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ProbabilityRow<TS, TV>(float* s, int width, float c, float lse2)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        TV cv = TS.Splat(c), shift = TS.Splat(-lse2);
        for (int v = 0; v < width; v += w)
            TS.Store(VectorMath.Exp2<TS, TV>(TS.MulAdd(TS.Load(s + v), cv, shift)), s + v);
    }

    /// <summary>dS = P * (dP - Di) * scale, written over dP.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScoreGradientRow<TS, TV>(float* p, float* dp, int width, float di, float scale)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        TV dv = TS.Splat(di), sv = TS.Splat(scale);
        for (int v = 0; v < width; v += w)
            TS.Store(TS.Mul(TS.Mul(TS.Load(p + v), TS.Sub(TS.Load(dp + v), dv)), sv), dp + v);
    }
}
