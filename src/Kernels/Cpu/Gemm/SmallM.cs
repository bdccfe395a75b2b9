using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>
/// The decode path (M = 1..<see cref="MaxRows"/>): B is streamed once straight from its storage, with no
/// packing. x W^T (B transposed, rows of W contiguous in K) becomes dot products of up to four rows of A with
/// two rows of W at a time; op(B) = B [K,N] becomes row-of-B axpys into L1-resident column blocks of C. Both are split
/// over N across the threads. These kernels are memory-bound on B, so they stay at 256-bit width.
/// </summary>
internal static unsafe class SmallM
{
    public const int MaxRows = 8;

    /// <summary>From this many elements of B (256 KiB, past what L2 serves in a microsecond or two) the decode product is split across threads.</summary>
    public const long ParallelWeights = 64 * 1024;

    public static bool Applies(in GemmProblem g) => g.M <= MaxRows;

    public static void Multiply(in GemmProblem g, int threads)
    {
        // op(A) rows must be contiguous in K: gather them when A is stored transposed.
        float* a = g.A;
        nint lda = g.Lda;
        if (g.TransA)
        {
            a = Workspace.Small(g.M * g.K);
            for (int p = 0; p < g.K; p++)
                for (int i = 0; i < g.M; i++) a[(nint)i * g.K + p] = g.A[p * g.Lda + i];
            lda = g.K;
        }
        // Column groups: pairs of W rows (transposed B) or 64-column runs of B rows (plain B).
        int width = g.TransB ? 2 : 64;
        int groups = GemmDriver.CeilDiv(g.N, width);
        // One contiguous column range per thread: the threads stream disjoint parts of B.
        int tasks = Math.Min(groups, threads);
        var job = Job.Current;
        job.Set(g, a, lda, GemmDriver.CeilDiv(groups, tasks) * width);
        WorkerPool.Run(job, GemmDriver.CeilDiv(g.N, job.PerTask));
    }

    /// <summary>One decode product, reused per calling thread; part t covers columns [t * PerTask, (t+1) * PerTask).</summary>
    private sealed class Job : IParallelWork
    {
        [ThreadStatic] private static Job? current;

        private GemmProblem g;
        private float* a;
        private nint lda;

        public static Job Current => current ??= new Job();

        public int PerTask { get; private set; }

        public void Set(in GemmProblem problem, float* rowsA, nint ldRowsA, int perTask)
        {
            g = problem;
            a = rowsA;
            lda = ldRowsA;
            PerTask = perTask;
        }

        public void Run(int part) => Columns(part * PerTask, Math.Min(g.N, (part + 1) * PerTask));

        public void Columns(int j0, int j1)
        {
            if (g.TransB) DotColumns(j0, j1);
            else AxpyColumns(j0, j1);
        }

        /// <summary>c[i, j] = dot(op(A) row i, B row j) for j in [j0, j1): two B rows by up to four A rows at once.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void DotColumns(int j0, int j1)
        {
            int k = g.K;
            if (g.M == 1)
            {
                // One token: a matrix-vector product. Long rows are walked one at a time: a single sequential
                // stream through W keeps the hardware prefetcher ahead (interleaving rows measured 30-60% slower
                // from DRAM). Short rows go four at a time so the horizontal dots are shared.
                float* y = g.C, w = g.B;
                nint ldb = g.Ldb;
                float alpha = g.Alpha, beta = g.Beta;
                float* dots = stackalloc float[4];
                int jj = j0;
                // Rows short or few enough to sit in L2 are not streamed from DRAM: eight at a time is faster there.
                bool cached = k < LongRow || (long)g.N * k <= CachedWeights;
                if (cached && Avx.IsSupported)
                {
                    for (; jj + 8 <= j1; jj += 8)
                    {
                        var r = Dot1x8(a, w + jj * ldb, ldb, k);
                        if (beta != 0f) r = Vector256.FusedMultiplyAdd(Vector256.Create(beta), Vector256.Load(y + jj), r * alpha);
                        else if (alpha != 1f) r *= alpha;
                        r.Store(y + jj);
                    }
                }
                if (cached)
                {
                    for (; jj + 4 <= j1; jj += 4)
                    {
                        Dot1x4(a, w + jj * ldb, ldb, k, dots);
                        for (int c = 0; c < 4; c++) y[jj + c] = beta == 0f ? alpha * dots[c] : alpha * dots[c] + beta * y[jj + c];
                    }
                }
                for (; jj < j1; jj++)
                {
                    float dot = DotLong(a, w + jj * ldb, k);
                    y[jj] = beta == 0f ? alpha * dot : alpha * dot + beta * y[jj];
                }
                return;
            }
            float* sums = stackalloc float[8];
            int j = j0;
            for (; j + 2 <= j1; j += 2)
            {
                float* w0 = g.B + j * g.Ldb, w1 = w0 + g.Ldb;
                for (int i = 0; i < g.M; i += 4)
                {
                    int rows = Math.Min(4, g.M - i);
                    Dot4x2(a + i * lda, lda, rows, w0, w1, k, sums);
                    for (int r = 0; r < rows; r++)
                    {
                        Store(i + r, j, sums[2 * r]);
                        Store(i + r, j + 1, sums[2 * r + 1]);
                    }
                }
            }
            for (; j < j1; j++)
            {
                float* w = g.B + j * g.Ldb;
                for (int i = 0; i < g.M; i++) Store(i, j, Dot(a + i * lda, w, k));
            }
        }

        /// <summary>
        /// c[i, j0..j1) = sum_p op(A)[i, p] B[p, j0..j1): blocks of up to <see cref="AxpyWidth"/> columns whose
        /// per-row sums live in an L1-resident buffer; B is walked row by row, one contiguous run per row.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void AxpyColumns(int j0, int j1)
        {
            int m = g.M;
            float* acc = Workspace.Sums(MaxRows * AxpyWidth);
            for (int jb = j0; jb < j1; jb += AxpyWidth)
            {
                int width = Math.Min(AxpyWidth, j1 - jb);
                new Span<float>(acc, m * AxpyWidth).Clear();
                for (int p = 0; p < g.K; p++)
                    AxpyRow(a + p, lda, m, g.B + p * g.Ldb + jb, width, acc);
                for (int i = 0; i < m; i++)
                    for (int c = 0; c < width; c++) Store(i, jb + c, acc[i * AxpyWidth + c]);
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Store(int i, int j, float sum)
        {
            float* c = g.C + i * g.Ldc + j;
            *c = g.Beta == 0f ? g.Alpha * sum : g.Alpha * sum + g.Beta * *c;
        }
    }

    /// <summary>sums[2r + s] = dot(a row r, w_s) for r &lt; rows (rows &lt;= 4); absent rows repeat row 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x2(float* a, nint lda, int rows, float* w0, float* w1, int k, float* sums)
    {
        float* a0 = a, a1 = rows > 1 ? a + lda : a, a2 = rows > 2 ? a + 2 * lda : a, a3 = rows > 3 ? a + 3 * lda : a;
        Vector256<float> s00 = default, s01 = default, s10 = default, s11 = default;
        Vector256<float> s20 = default, s21 = default, s30 = default, s31 = default;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var v0 = Vector256.Load(w0 + p);
            var v1 = Vector256.Load(w1 + p);
            var x = Vector256.Load(a0 + p);
            s00 = Vector256.FusedMultiplyAdd(x, v0, s00); s01 = Vector256.FusedMultiplyAdd(x, v1, s01);
            x = Vector256.Load(a1 + p);
            s10 = Vector256.FusedMultiplyAdd(x, v0, s10); s11 = Vector256.FusedMultiplyAdd(x, v1, s11);
            x = Vector256.Load(a2 + p);
            s20 = Vector256.FusedMultiplyAdd(x, v0, s20); s21 = Vector256.FusedMultiplyAdd(x, v1, s21);
            x = Vector256.Load(a3 + p);
            s30 = Vector256.FusedMultiplyAdd(x, v0, s30); s31 = Vector256.FusedMultiplyAdd(x, v1, s31);
        }
        sums[0] = Vector256.Sum(s00); sums[1] = Vector256.Sum(s01);
        sums[2] = Vector256.Sum(s10); sums[3] = Vector256.Sum(s11);
        sums[4] = Vector256.Sum(s20); sums[5] = Vector256.Sum(s21);
        sums[6] = Vector256.Sum(s30); sums[7] = Vector256.Sum(s31);
        for (; p < k; p++)
        {
            float u = w0[p], v = w1[p];
            sums[0] += a0[p] * u; sums[1] += a0[p] * v;
            sums[2] += a1[p] * u; sums[3] += a1[p] * v;
            sums[4] += a2[p] * u; sums[5] += a2[p] * v;
            sums[6] += a3[p] * u; sums[7] += a3[p] * v;
        }
    }

    /// <summary>From this row length (floats) a single-token product walks W one row at a time.</summary>
    private const int LongRow = 128;

    /// <summary>Up to this many elements of W (256 KiB) a single-token product treats W as cache-resident.</summary>
    private const long CachedWeights = 64 * 1024;

    /// <summary>
    /// The dot products of x with eight rows of W (ldw apart, k &lt; <see cref="LongRow"/> with AVX): one
    /// accumulator per row, so eight independent FMA chains hide the FMA latency, and the eight horizontal sums
    /// come out together as one vector.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static Vector256<float> Dot1x8(float* x, float* w, nint ldw, int k)
    {
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var xv = Vector256.Load(x + p);
            float* wp = w + p;
            s0 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp), s0);
            s1 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp + ldw), s1);
            s2 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp + 2 * ldw), s2);
            s3 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp + 3 * ldw), s3);
            s4 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp + 4 * ldw), s4);
            s5 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp + 5 * ldw), s5);
            s6 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp + 6 * ldw), s6);
            s7 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(wp + 7 * ldw), s7);
        }
        var r = SumEach(s0, s1, s2, s3, s4, s5, s6, s7);
        if (p < k)
        {
            var tail = stackalloc float[8];
            for (int row = 0; row < 8; row++)
            {
                float t = 0f;
                for (int q = p; q < k; q++) t += x[q] * w[row * ldw + q];
                tail[row] = t;
            }
            r += Vector256.Load(tail);
        }
        return r;
    }

    /// <summary>[sum(s0), ..., sum(s7)]: three rounds of pairwise horizontal adds, then the 128-bit halves folded.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> SumEach(Vector256<float> s0, Vector256<float> s1, Vector256<float> s2, Vector256<float> s3,
        Vector256<float> s4, Vector256<float> s5, Vector256<float> s6, Vector256<float> s7)
    {
        var a = Avx.HorizontalAdd(Avx.HorizontalAdd(s0, s1), Avx.HorizontalAdd(s2, s3));   // [0..3 low halves | 0..3 high halves]
        var b = Avx.HorizontalAdd(Avx.HorizontalAdd(s4, s5), Avx.HorizontalAdd(s6, s7));   // [4..7 low | 4..7 high]
        return Avx.Permute2x128(a, b, 0x20) + Avx.Permute2x128(a, b, 0x31);
    }

    /// <summary>y[0..4) = dot(x, w row r) for four rows of W, ldw apart: four accumulators, one x load per step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x4(float* x, float* w, nint ldw, int k, float* y)
    {
        float* w0 = w, w1 = w + ldw, w2 = w + 2 * ldw, w3 = w + 3 * ldw;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var xv = Vector256.Load(x + p);
            s0 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(w0 + p), s0);
            s1 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(w1 + p), s1);
            s2 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(w2 + p), s2);
            s3 = Vector256.FusedMultiplyAdd(xv, Vector256.Load(w3 + p), s3);
        }
        if (Avx.IsSupported)
        {
            // Reduce the four accumulators together: two rounds of pairwise adds, then fold the 128-bit halves.
            var h = Avx.HorizontalAdd(Avx.HorizontalAdd(s0, s1), Avx.HorizontalAdd(s2, s3));
            Vector128.Store(h.GetLower() + h.GetUpper(), y);
        }
        else
        {
            y[0] = Vector256.Sum(s0); y[1] = Vector256.Sum(s1); y[2] = Vector256.Sum(s2); y[3] = Vector256.Sum(s3);
        }
        for (; p < k; p++)
        {
            float xp = x[p];
            y[0] += xp * w0[p]; y[1] += xp * w1[p]; y[2] += xp * w2[p]; y[3] += xp * w3[p];
        }
    }

    /// <summary>dot(x, w) with four independent accumulators (32 floats per step), for long rows streamed from memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotLong(float* x, float* w, int k)
    {
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        int p = 0;
        for (; p + 32 <= k; p += 32)
        {
            s0 = Vector256.FusedMultiplyAdd(Vector256.Load(x + p), Vector256.Load(w + p), s0);
            s1 = Vector256.FusedMultiplyAdd(Vector256.Load(x + p + 8), Vector256.Load(w + p + 8), s1);
            s2 = Vector256.FusedMultiplyAdd(Vector256.Load(x + p + 16), Vector256.Load(w + p + 16), s2);
            s3 = Vector256.FusedMultiplyAdd(Vector256.Load(x + p + 24), Vector256.Load(w + p + 24), s3);
        }
        for (; p + 8 <= k; p += 8) s0 = Vector256.FusedMultiplyAdd(Vector256.Load(x + p), Vector256.Load(w + p), s0);
        float sum = Vector256.Sum((s0 + s1) + (s2 + s3));
        for (; p < k; p++) sum += x[p] * w[p];
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot(float* x, float* w, int k)
    {
        var s = Vector256<float>.Zero;
        int p = 0;
        for (; p + 8 <= k; p += 8) s = Vector256.FusedMultiplyAdd(Vector256.Load(x + p), Vector256.Load(w + p), s);
        float sum = Vector256.Sum(s);
        for (; p < k; p++) sum += x[p] * w[p];
        return sum;
    }

    /// <summary>
    /// Columns per block of the plain-B decode path: long runs of each B row keep the hardware prefetcher
    /// streaming (short runs from rows 16 KB apart starve it); 8 rows of sums take 64 KB of L2.
    /// </summary>
    private const int AxpyWidth = 2048;

    /// <summary>acc[i, 0..width) += a[i * lda] * b[0..width) for the m rows (one row of B, read once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AxpyRow(float* a, nint lda, int m, float* b, int width, float* acc)
    {
        int c = 0;
        for (; c + 8 <= width; c += 8)
        {
            var bv = Vector256.Load(b + c);
            for (int i = 0; i < m; i++)
            {
                float* s = acc + i * AxpyWidth + c;
                Vector256.Store(Vector256.FusedMultiplyAdd(Vector256.Create(a[i * lda]), bv, Vector256.Load(s)), s);
            }
        }
        for (; c < width; c++)
            for (int i = 0; i < m; i++) acc[i * AxpyWidth + c] += a[i * lda] * b[c];
    }
}
