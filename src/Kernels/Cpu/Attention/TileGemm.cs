using System.Runtime.CompilerServices;

namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>
/// The small register-blocked products inside an attention tile: C[rows, nVec*W] = (or +=) A[rows, kLen] B[kLen, nVec*W].
/// A is read one element at a time (broadcast) through a row and a column stride, so the same kernel serves
/// A and A^T; B and C rows are vectors (their widths are padded to whole vectors by the packing code).
/// </summary>
internal static unsafe class TileGemm
{
    public static void Run<TS, TV>(int rows, int nVec, int kLen, float* a, int aRow, int aCol,
        float* b, int ldb, float* c, int ldc, bool accumulate)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        int r = 0;
        // Six rows by two vectors at a time when B is an even number of vectors wide (12 accumulators: with the
        // two B vectors and the broadcast they fill the 16 AVX2 registers), then four-row and single-row blocks.
        if (nVec % 2 == 0)
            for (; r + 6 <= rows; r += 6)
                for (int v = 0; v < nVec; v += 2)
                    Rows6x2<TS, TV>(kLen, a + (nint)r * aRow, aRow, aCol, b + v * w, ldb, c + (nint)r * ldc + v * w, ldc, accumulate);
        for (; r + 4 <= rows; r += 4)
        {
            float* ar = a + (nint)r * aRow;
            float* cr = c + (nint)r * ldc;
            int v = 0;
            for (; v + 2 <= nVec; v += 2)
                Rows4x2<TS, TV>(kLen, ar, aRow, aCol, b + v * w, ldb, cr + v * w, ldc, accumulate);
            if (v < nVec)
                Rows4x1<TS, TV>(kLen, ar, aRow, aCol, b + v * w, ldb, cr + v * w, ldc, accumulate);
        }
        for (; r < rows; r++)
        {
            float* ar = a + (nint)r * aRow;
            float* cr = c + (nint)r * ldc;
            int v = 0;
            for (; v + 4 <= nVec; v += 4)
                Row1x4<TS, TV>(kLen, ar, aCol, b + v * w, ldb, cr + v * w, accumulate);
            for (; v < nVec; v++)
                Row1x1<TS, TV>(kLen, ar, aCol, b + v * w, ldb, cr + v * w, accumulate);
        }
    }

    /// <summary>Four rows of A times two vectors of B: 8 independent accumulators (enough to hide FMA latency).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rows4x2<TS, TV>(int kLen, float* a, int aRow, int aCol, float* b, int ldb, float* c, int ldc, bool accumulate)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        float* a0 = a, a1 = a + aRow, a2 = a + 2 * aRow, a3 = a + 3 * aRow;
        float* c0 = c, c1 = c + ldc, c2 = c + 2 * ldc, c3 = c + 3 * ldc;
        TV s00, s01, s10, s11, s20, s21, s30, s31;
        if (accumulate)
        {
            s00 = TS.Load(c0); s01 = TS.Load(c0 + w);
            s10 = TS.Load(c1); s11 = TS.Load(c1 + w);
            s20 = TS.Load(c2); s21 = TS.Load(c2 + w);
            s30 = TS.Load(c3); s31 = TS.Load(c3 + w);
        }
        else
        {
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = TS.Zero;
        }
        nint ka = 0;
        for (int k = 0; k < kLen; k++, ka += aCol, b += ldb)
        {
            TV b0 = TS.Load(b), b1 = TS.Load(b + w);
            TV x = TS.Splat(a0[ka]);
            s00 = TS.MulAdd(x, b0, s00); s01 = TS.MulAdd(x, b1, s01);
            x = TS.Splat(a1[ka]);
            s10 = TS.MulAdd(x, b0, s10); s11 = TS.MulAdd(x, b1, s11);
            x = TS.Splat(a2[ka]);
            s20 = TS.MulAdd(x, b0, s20); s21 = TS.MulAdd(x, b1, s21);
            x = TS.Splat(a3[ka]);
            s30 = TS.MulAdd(x, b0, s30); s31 = TS.MulAdd(x, b1, s31);
        }
        TS.Store(s00, c0); TS.Store(s01, c0 + w);
        TS.Store(s10, c1); TS.Store(s11, c1 + w);
        TS.Store(s20, c2); TS.Store(s21, c2 + w);
        TS.Store(s30, c3); TS.Store(s31, c3 + w);
    }

    /// <summary>Six rows of A times two vectors of B: 12 accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rows6x2<TS, TV>(int kLen, float* a, int aRow, int aCol, float* b, int ldb, float* c, int ldc, bool accumulate)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        float* a0 = a, a1 = a + aRow, a2 = a + 2 * aRow, a3 = a + 3 * aRow, a4 = a + 4 * aRow, a5 = a + 5 * aRow;
        float* c0 = c, c1 = c + ldc, c2 = c + 2 * ldc, c3 = c + 3 * ldc, c4 = c + 4 * ldc, c5 = c + 5 * ldc;
        TV s00, s01, s10, s11, s20, s21, s30, s31, s40, s41, s50, s51;
        if (accumulate)
        {
            s00 = TS.Load(c0); s01 = TS.Load(c0 + w);
            s10 = TS.Load(c1); s11 = TS.Load(c1 + w);
            s20 = TS.Load(c2); s21 = TS.Load(c2 + w);
            s30 = TS.Load(c3); s31 = TS.Load(c3 + w);
            s40 = TS.Load(c4); s41 = TS.Load(c4 + w);
            s50 = TS.Load(c5); s51 = TS.Load(c5 + w);
        }
        else
        {
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = s40 = s41 = s50 = s51 = TS.Zero;
        }
        nint ka = 0;
        for (int k = 0; k < kLen; k++, ka += aCol, b += ldb)
        {
            TV b0 = TS.Load(b), b1 = TS.Load(b + w);
            TV x = TS.Splat(a0[ka]);
            s00 = TS.MulAdd(x, b0, s00); s01 = TS.MulAdd(x, b1, s01);
            x = TS.Splat(a1[ka]);
            s10 = TS.MulAdd(x, b0, s10); s11 = TS.MulAdd(x, b1, s11);
            x = TS.Splat(a2[ka]);
            s20 = TS.MulAdd(x, b0, s20); s21 = TS.MulAdd(x, b1, s21);
            x = TS.Splat(a3[ka]);
            s30 = TS.MulAdd(x, b0, s30); s31 = TS.MulAdd(x, b1, s31);
            x = TS.Splat(a4[ka]);
            s40 = TS.MulAdd(x, b0, s40); s41 = TS.MulAdd(x, b1, s41);
            x = TS.Splat(a5[ka]);
            s50 = TS.MulAdd(x, b0, s50); s51 = TS.MulAdd(x, b1, s51);
        }
        TS.Store(s00, c0); TS.Store(s01, c0 + w);
        TS.Store(s10, c1); TS.Store(s11, c1 + w);
        TS.Store(s20, c2); TS.Store(s21, c2 + w);
        TS.Store(s30, c3); TS.Store(s31, c3 + w);
        TS.Store(s40, c4); TS.Store(s41, c4 + w);
        TS.Store(s50, c5); TS.Store(s51, c5 + w);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rows4x1<TS, TV>(int kLen, float* a, int aRow, int aCol, float* b, int ldb, float* c, int ldc, bool accumulate)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        float* a0 = a, a1 = a + aRow, a2 = a + 2 * aRow, a3 = a + 3 * aRow;
        float* c0 = c, c1 = c + ldc, c2 = c + 2 * ldc, c3 = c + 3 * ldc;
        TV s0 = accumulate ? TS.Load(c0) : TS.Zero, s1 = accumulate ? TS.Load(c1) : TS.Zero;
        TV s2 = accumulate ? TS.Load(c2) : TS.Zero, s3 = accumulate ? TS.Load(c3) : TS.Zero;
        nint ka = 0;
        for (int k = 0; k < kLen; k++, ka += aCol, b += ldb)
        {
            TV b0 = TS.Load(b);
            s0 = TS.MulAdd(TS.Splat(a0[ka]), b0, s0);
            s1 = TS.MulAdd(TS.Splat(a1[ka]), b0, s1);
            s2 = TS.MulAdd(TS.Splat(a2[ka]), b0, s2);
            s3 = TS.MulAdd(TS.Splat(a3[ka]), b0, s3);
        }
        TS.Store(s0, c0); TS.Store(s1, c1); TS.Store(s2, c2); TS.Store(s3, c3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row1x4<TS, TV>(int kLen, float* a, int aCol, float* b, int ldb, float* c, bool accumulate)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        int w = TS.Count;
        TV s0, s1, s2, s3;
        if (accumulate) { s0 = TS.Load(c); s1 = TS.Load(c + w); s2 = TS.Load(c + 2 * w); s3 = TS.Load(c + 3 * w); }
        else s0 = s1 = s2 = s3 = TS.Zero;
        nint ka = 0;
        for (int k = 0; k < kLen; k++, ka += aCol, b += ldb)
        {
            TV x = TS.Splat(a[ka]);
            s0 = TS.MulAdd(x, TS.Load(b), s0);
            s1 = TS.MulAdd(x, TS.Load(b + w), s1);
            s2 = TS.MulAdd(x, TS.Load(b + 2 * w), s2);
            s3 = TS.MulAdd(x, TS.Load(b + 3 * w), s3);
        }
        TS.Store(s0, c); TS.Store(s1, c + w); TS.Store(s2, c + 2 * w); TS.Store(s3, c + 3 * w);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row1x1<TS, TV>(int kLen, float* a, int aCol, float* b, int ldb, float* c, bool accumulate)
        where TS : struct, ISimdLanes<TV> where TV : struct
    {
        TV s = accumulate ? TS.Load(c) : TS.Zero;
        nint ka = 0;
        for (int k = 0; k < kLen; k++, ka += aCol, b += ldb)
            s = TS.MulAdd(TS.Splat(a[ka]), TS.Load(b), s);
        TS.Store(s, c);
    }
}
