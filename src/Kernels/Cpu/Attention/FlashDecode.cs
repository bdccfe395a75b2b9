using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>
/// Attention for a handful of queries (decoding): one work item per (batch, query head) scores each query
/// against its visible keys with one dot product per key, then sums the value rows weighted by the softmax.
/// No packing and no query padding, so a single new token costs O(Tk D) with a small constant; the tiled
/// <see cref="FlashForward"/> pays off from a few queries up.
/// </summary>
internal unsafe struct FlashDecode
{
    /// <summary>Up to this many queries per call take the decode path.</summary>
    public const int MaxQueries = 4;

    public float* Q, K, V, O, Lse;
    public int Batch, Tq, Tk, Hq, Hkv, D;
    public float Scale;
    public AttentionMask Mask;

    [ThreadStatic] private static float[]? scoreBuffer;

    public readonly int Items => Batch * Hq;

    public readonly void Run<TS, TV>(int item) where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int h = item % Hq, b = item / Hq;
        int g = h / (Hq / Hkv);
        nint qRowStride = (nint)Hq * D, kvRowStride = (nint)Hkv * D;
        float* kBase = K + (nint)b * Tk * kvRowStride + (nint)g * D;
        float* vBase = V + (nint)b * Tk * kvRowStride + (nint)g * D;
        if (scoreBuffer is null || scoreBuffer.Length < Tk) scoreBuffer = new float[Math.Max(Tk, 256)];
        Span<int> bounds = stackalloc int[2 * AttentionMask.MaxIntervals];

        fixed (float* scores = scoreBuffer)
        {
            for (int i = 0; i < Tq; i++)
            {
                float* q = Q + ((nint)b * Tq + i) * qRowStride + (nint)h * D;
                float* o = O + ((nint)b * Tq + i) * qRowStride + (nint)h * D;
                float* lse = Lse + ((nint)b * Hq + h) * Tq + i;
                int intervals = Mask.VisibleIntervals(h, Hq, i, Tq, Tk, bounds);

                // Scores of the visible keys, and their maximum.
                float max = float.NegativeInfinity;
                bool eightWide = D == 8 && Avx.IsSupported;
                for (int s = 0; s < intervals; s++)
                {
                    int j = bounds[2 * s], hi = bounds[2 * s + 1];
                    if (eightWide) max = MathF.Max(max, Scores8(q, kBase, kvRowStride, ref j, hi, Scale, scores));
                    for (; j < hi; j++)
                    {
                        float score = Dot<TS, TV>(q, kBase + j * kvRowStride, D) * Scale;
                        scores[j] = score;
                        if (score > max) max = score;
                    }
                }
                new Span<float>(o, D).Clear();
                if (float.IsNegativeInfinity(max))
                {
                    *lse = float.NegativeInfinity;   // the query sees no key
                    continue;
                }

                // p_j = exp(s_j - max); o = sum_j p_j v_j / sum_j p_j.
                float sum = 0f;
                for (int s = 0; s < intervals; s++)
                {
                    int lo = bounds[2 * s], hi = bounds[2 * s + 1];
                    sum += ExpShifted<TS, TV>(scores + lo, hi - lo, max);
                    if (D == TS.Count)
                    {
                        // One vector per head: keep the running sum in a register, not in o (a store-to-load chain per key).
                        var acc = TS.Load(o);
                        for (int j = lo; j < hi; j++) acc = TS.MulAdd(TS.Splat(scores[j]), TS.Load(vBase + j * kvRowStride), acc);
                        TS.Store(acc, o);
                    }
                    else
                    {
                        for (int j = lo; j < hi; j++) Axpy<TS, TV>(scores[j], vBase + j * kvRowStride, o, D);
                    }
                }
                float inv = 1f / sum;
                for (int d = 0; d < D; d++) o[d] *= inv;
                *lse = max + MathF.Log(sum);
            }
        }
    }

    /// <summary>
    /// Heads of width 8, eight keys at a time: the eight products q * k_j are reduced together into one vector
    /// of scores (instead of one horizontal sum per key). Advances <paramref name="j"/> past the whole groups;
    /// returns their maximum score.
    /// </summary>
    private static float Scores8(float* q, float* k, nint stride, ref int j, int hi, float scale, float* scores)
    {
        var qv = Vector256.Load(q);
        var max = Vector256.Create(float.NegativeInfinity);
        var scaleV = Vector256.Create(scale);
        for (; j + 8 <= hi; j += 8)
        {
            float* kj = k + j * stride;
            var r = Gemm.SmallM.SumEach(qv * Vector256.Load(kj), qv * Vector256.Load(kj + stride),
                qv * Vector256.Load(kj + 2 * stride), qv * Vector256.Load(kj + 3 * stride),
                qv * Vector256.Load(kj + 4 * stride), qv * Vector256.Load(kj + 5 * stride),
                qv * Vector256.Load(kj + 6 * stride), qv * Vector256.Load(kj + 7 * stride)) * scaleV;
            r.Store(scores + j);
            max = Vector256.Max(max, r);
        }
        return Lanes256.MaxAcross(max);
    }

    /// <summary>x[j] = exp(x[j] - max) in place; returns the sum.</summary>
    private static float ExpShifted<TS, TV>(float* x, int n, float max) where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count, j = 0;
        var shift = TS.Splat(max);
        var acc = TS.Zero;
        for (; j <= n - w; j += w)
        {
            var p = VectorMath.Exp<TS, TV>(TS.Sub(TS.Load(x + j), shift));
            TS.Store(p, x + j);
            acc = TS.Add(acc, p);
        }
        float sum = TS.SumAcross(acc);
        for (; j < n; j++)
        {
            x[j] = MathF.Exp(x[j] - max);
            sum += x[j];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot<TS, TV>(float* a, float* b, int n) where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count, d = 0;
        var acc = TS.Zero;
        for (; d <= n - w; d += w) acc = TS.MulAdd(TS.Load(a + d), TS.Load(b + d), acc);
        float s = TS.SumAcross(acc);
        for (; d < n; d++) s += a[d] * b[d];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Axpy<TS, TV>(float alpha, float* x, float* y, int n) where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count, d = 0;
        var a = TS.Splat(alpha);
        for (; d <= n - w; d += w) TS.Store(TS.MulAdd(a, TS.Load(x + d), TS.Load(y + d)), y + d);
        for (; d < n; d++) y[d] += alpha * x[d];
    }
}
