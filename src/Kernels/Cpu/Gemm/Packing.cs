using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>
/// Copies blocks of op(A) and op(B) into the contiguous micro-panel order the micro-kernel streams through.
/// Transposes are resolved here, so one micro-kernel serves all four cases; tails are zero-padded.
/// </summary>
internal static unsafe class Packing
{
    /// <summary>
    /// Rows [i0, i0+rows) (any count) and columns [p0, p0+kc) of op(A) into consecutive mr-row panels of
    /// kc x mr, panel q holding dst[q * kc * mr + p * mr + r]; the last panel is zero-padded.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackABlock(in GemmProblem g, int i0, int rows, int p0, int kc, int mr, float* dst)
    {
        // Transposed A: op(A)(i, p) = A[p, i], so each stored row p is a run of op(A) rows to spread.
        if (g.TransA)
        {
            SpreadRows(g.A + p0 * g.Lda + i0, g.Lda, kc, rows, mr, dst);
            return;
        }
        // Plain A: each panel interleaves mr stored rows (full 6-row AVX2 panels have their own transpose).
        for (int q = 0; q * mr < rows; q++)
        {
            int panelRows = Math.Min(mr, rows - q * mr);
            float* a = g.A + (i0 + q * mr) * g.Lda + p0, d = dst + (nint)q * kc * mr;
            if (mr == 6 && panelRows == 6 && Avx.IsSupported) Transpose6Rows(a, g.Lda, kc, d);
            else GatherColumns(a, g.Lda, panelRows, kc, mr, d);
        }
    }

    /// <summary>
    /// Rows [p0, p0+kc) and columns [j0, j0+cols) (cols &lt;= nr) of op(B) into dst[p * nr + j] (one panel).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackB(in GemmProblem g, int p0, int kc, int j0, int cols, int nr, float* dst)
    {
        // op(B)(p, j) = B[j, p]: each stored row j becomes one column of the panel.
        if (g.TransB) GatherColumns(g.B + j0 * g.Ldb + p0, g.Ldb, cols, kc, nr, dst);
        else PackBRows(g, p0, kc, j0, cols, nr, dst);
    }

    /// <summary>
    /// Plain B: rows [p0, p0+kc) and columns [j0, j0+cols) (any width) into consecutive nr-wide panels of kc x nr.
    /// </summary>
    public static void PackBRows(in GemmProblem g, int p0, int kc, int j0, int cols, int nr, float* dst) =>
        SpreadRows(g.B + p0 * g.Ldb + j0, g.Ldb, kc, cols, nr, dst);

    /// <summary>
    /// <paramref name="count"/> source rows (stride ld, kc long) become the first count columns of one kc x width
    /// panel (dst[p * width + c]); columns [count, width) are zero. Groups of 8 rows go through register
    /// transposes, the rest element by element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GatherColumns(float* src, nint ld, int count, int kc, int width, float* dst)
    {
        int c = 0;
        if (width >= 8)
            for (; c + 8 <= count; c += 8) Transpose8Columns(src + c * ld, ld, kc, dst + c, width);
        for (; c < width; c++)
        {
            float* d = dst + c;
            if (c < count)
            {
                float* row = src + c * ld;
                for (int p = 0; p < kc; p++) d[p * width] = row[p];
            }
            else
            {
                for (int p = 0; p < kc; p++) d[p * width] = 0f;
            }
        }
    }

    /// <summary>
    /// kc source rows (stride ld) of <paramref name="count"/> floats each, spread over consecutive width-wide
    /// panels of kc x width (panel q holds elements [q * width, (q+1) * width) of every row); the last panel is
    /// zero-padded. Walking the source row by row reads one contiguous run per row instead of visiting kc
    /// distant rows once per panel, which thrashes the TLB and, with rows a power of two apart, a few L1 sets.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SpreadRows(float* src, nint ld, int kc, int count, int width, float* dst)
    {
        int fullPanels = count / width, tail = count - fullPanels * width;
        nint panelSize = (nint)kc * width;
        for (int p = 0; p < kc; p++)
        {
            float* row = src + p * ld, d = dst + p * width;
            for (int q = 0; q < fullPanels; q++) CopyRun(row + q * width, d + q * panelSize, width);
            if (tail > 0)
            {
                float* s = row + fullPanels * width, t = d + fullPanels * panelSize;
                int j = 0;
                for (; j < tail; j++) t[j] = s[j];
                for (; j < width; j++) t[j] = 0f;
            }
        }
    }

    /// <summary>
    /// Eight source rows (stride ld, kc long) become eight adjacent columns of dst (stride nr): 8x8 blocks
    /// are transposed in registers, the k tail element by element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose8Columns(float* src, nint ld, int kc, float* dst, int nr)
    {
        int p = 0;
        if (Avx.IsSupported)
        {
            for (; p + 8 <= kc; p += 8)
            {
                var r0 = Vector256.Load(src + p);
                var r1 = Vector256.Load(src + ld + p);
                var r2 = Vector256.Load(src + 2 * ld + p);
                var r3 = Vector256.Load(src + 3 * ld + p);
                var r4 = Vector256.Load(src + 4 * ld + p);
                var r5 = Vector256.Load(src + 5 * ld + p);
                var r6 = Vector256.Load(src + 6 * ld + p);
                var r7 = Vector256.Load(src + 7 * ld + p);
                Transpose8x8(ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7);
                float* d = dst + p * nr;
                Vector256.Store(r0, d);
                Vector256.Store(r1, d + nr);
                Vector256.Store(r2, d + 2 * nr);
                Vector256.Store(r3, d + 3 * nr);
                Vector256.Store(r4, d + 4 * nr);
                Vector256.Store(r5, d + 5 * nr);
                Vector256.Store(r6, d + 6 * nr);
                Vector256.Store(r7, d + 7 * nr);
            }
        }
        for (; p < kc; p++)
            for (int c = 0; c < 8; c++) dst[p * nr + c] = src[c * ld + p];
    }

    /// <summary>
    /// Six rows (stride ld, kc long) into dst[p * 6 + r]: 8x8 register transposes with two zero rows, each
    /// transposed column stored as 8 floats whose last two spill into the next k step (rewritten just after),
    /// so the vector loop stops while a later k step remains; the tail goes element by element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose6Rows(float* src, nint ld, int kc, float* dst)
    {
        int p = 0;
        for (; p + 8 < kc; p += 8)
        {
            var r0 = Vector256.Load(src + p);
            var r1 = Vector256.Load(src + ld + p);
            var r2 = Vector256.Load(src + 2 * ld + p);
            var r3 = Vector256.Load(src + 3 * ld + p);
            var r4 = Vector256.Load(src + 4 * ld + p);
            var r5 = Vector256.Load(src + 5 * ld + p);
            var r6 = Vector256<float>.Zero;
            var r7 = Vector256<float>.Zero;
            Transpose8x8(ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7);
            float* d = dst + p * 6;
            Vector256.Store(r0, d);
            Vector256.Store(r1, d + 6);
            Vector256.Store(r2, d + 12);
            Vector256.Store(r3, d + 18);
            Vector256.Store(r4, d + 24);
            Vector256.Store(r5, d + 30);
            Vector256.Store(r6, d + 36);
            Vector256.Store(r7, d + 42);
        }
        for (; p < kc; p++)
            for (int r = 0; r < 6; r++) dst[p * 6 + r] = src[r * ld + p];
    }

    /// <summary>In-register 8x8 transpose: unpack pairs, then 64-bit pairs, then swap 128-bit lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(ref Vector256<float> r0, ref Vector256<float> r1, ref Vector256<float> r2, ref Vector256<float> r3,
        ref Vector256<float> r4, ref Vector256<float> r5, ref Vector256<float> r6, ref Vector256<float> r7)
    {
        // Stage 1: interleave 32-bit elements of row pairs (within 128-bit lanes).
        var t0 = UnpackLow(r0, r1); var t1 = UnpackHigh(r0, r1);
        var t2 = UnpackLow(r2, r3); var t3 = UnpackHigh(r2, r3);
        var t4 = UnpackLow(r4, r5); var t5 = UnpackHigh(r4, r5);
        var t6 = UnpackLow(r6, r7); var t7 = UnpackHigh(r6, r7);
        // Stage 2: interleave 64-bit pairs, giving 4x4 transposes inside each lane.
        var s0 = UnpackLow64(t0, t2); var s1 = UnpackHigh64(t0, t2);
        var s2 = UnpackLow64(t1, t3); var s3 = UnpackHigh64(t1, t3);
        var s4 = UnpackLow64(t4, t6); var s5 = UnpackHigh64(t4, t6);
        var s6 = UnpackLow64(t5, t7); var s7 = UnpackHigh64(t5, t7);
        // Stage 3: combine the low lanes of rows 0-3 with those of rows 4-7, and the high lanes likewise.
        r0 = Vector256.Create(s0.GetLower(), s4.GetLower());
        r1 = Vector256.Create(s1.GetLower(), s5.GetLower());
        r2 = Vector256.Create(s2.GetLower(), s6.GetLower());
        r3 = Vector256.Create(s3.GetLower(), s7.GetLower());
        r4 = Vector256.Create(s0.GetUpper(), s4.GetUpper());
        r5 = Vector256.Create(s1.GetUpper(), s5.GetUpper());
        r6 = Vector256.Create(s2.GetUpper(), s6.GetUpper());
        r7 = Vector256.Create(s3.GetUpper(), s7.GetUpper());
    }

    private static Vector256<float> UnpackLow(Vector256<float> a, Vector256<float> b) => Avx.UnpackLow(a, b);

    private static Vector256<float> UnpackHigh(Vector256<float> a, Vector256<float> b) => Avx.UnpackHigh(a, b);

    private static Vector256<float> UnpackLow64(Vector256<float> a, Vector256<float> b) => Avx.UnpackLow(a.AsDouble(), b.AsDouble()).AsSingle();

    private static Vector256<float> UnpackHigh64(Vector256<float> a, Vector256<float> b) => Avx.UnpackHigh(a.AsDouble(), b.AsDouble()).AsSingle();

    /// <summary>Copy n floats with 256-bit moves, then a 128-bit move and single floats for the rest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyRun(float* src, float* dst, int n)
    {
        int j = 0;
        for (; j + 8 <= n; j += 8) Vector256.Store(Vector256.Load(src + j), dst + j);
        if (j + 4 <= n)
        {
            Vector128.Store(Vector128.Load(src + j), dst + j);
            j += 4;
        }
        for (; j < n; j++) dst[j] = src[j];
    }
}
