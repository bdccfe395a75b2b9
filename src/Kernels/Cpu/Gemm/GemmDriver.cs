using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>
/// BLIS-style blocked GEMM. With several threads C is cut once into disjoint parts (column ranges, or row
/// ranges when M is the larger side), one per thread, and each thread runs the whole blocked loop nest on
/// its part with its own packing buffers: one parallel region per call, no barriers between K slices.
/// Within a part: for each NC-wide column block and KC-deep slice, pack the KC x NC block of op(B) (L3),
/// then for each MC-row block pack it (L2) and run the micro-kernel over its MR x NR tiles, the B
/// micro-panel staying in L1 while the A micro-panels stream from L2.
/// </summary>
internal static unsafe class GemmDriver
{
    /// <summary>Below this many multiply-adds one thread is faster than waking others.</summary>
    internal const long ParallelVolume = 1L << 20;

    /// <summary>B panels packed per pass over the KC rows of plain B: each row is read in runs of this many NR-wide segments.</summary>
    private const int PanelsPerPackPass = 8;

    /// <summary>C = alpha op(A) op(B) + beta C. <paramref name="threads"/> = 1 runs on the calling thread only.</summary>
    public static void Multiply(in GemmProblem g, GemmKernel kernel, int threads)
    {
        if (g.M == 0 || g.N == 0) return;
        if (g.K == 0 || g.Alpha == 0f)
        {
            ScaleC(g);
            return;
        }
        if (SmallM.Applies(g))
        {
            // Decode products stream B once: splitting pays off as soon as B is larger than a few L2 lines' worth of work.
            SmallM.Multiply(g, (long)g.N * g.K >= SmallM.ParallelWeights ? threads : 1);
            return;
        }
        var problem = g.FrozenB is { } frozen && g.Packed is null ? g.WithPacked(PackedPanels.For(frozen, g, kernel)) : g;
        if (g.Volume < ParallelVolume) threads = 1;
        if (threads == 1)
        {
            Blocked(problem, kernel);
            return;
        }
        var job = Job.Current;
        int parts = job.Plan(problem, kernel, threads);
        WorkerPool.Run(job, parts);
    }

    /// <summary>C = beta C (C = 0 when beta is 0, whatever C held).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScaleC(in GemmProblem g)
    {
        for (int i = 0; i < g.M; i++)
        {
            var row = new Span<float>(g.C + i * g.Ldc, g.N);
            if (g.Beta == 0f) row.Clear();
            else if (g.Beta != 1f)
                for (int j = 0; j < row.Length; j++) row[j] *= g.Beta;
        }
    }

    /// <summary>
    /// One multi-threaded multiplication: part p is a disjoint block of C. Splitting the larger of M and N
    /// keeps the duplicated packing (every part packs all of the other operand) the smaller one.
    /// Reused per calling thread, so a call allocates nothing.
    /// </summary>
    private sealed class Job : IParallelWork
    {
        [ThreadStatic] private static Job? current;

        private GemmProblem g;
        private GemmKernel kernel = GemmKernel.Avx2;
        private bool splitRows;
        private int step;

        public static Job Current => current ??= new Job();

        /// <summary>Chooses the split and returns the number of parts (at most <paramref name="threads"/>).</summary>
        public int Plan(in GemmProblem problem, GemmKernel gemmKernel, int threads)
        {
            g = problem;
            kernel = gemmKernel;
            // On a tie, a transposed A (gathered MR floats per k step) is the dearer one to pack twice. With B
            // pre-packed, a row split duplicates only reads of the shared panels, much cheaper than every part
            // packing all of A: then rows are split unless B is far wider (the LM head's forward).
            splitRows = g.Packed is not null ? 3L * g.M > g.N : g.M > g.N || (g.M == g.N && g.TransA);
            int extent = splitRows ? g.M : g.N, unit = splitRows ? kernel.MR : kernel.NR;
            // Tile-aligned part boundaries, so only the last part has ragged tiles.
            step = RoundUp(CeilDiv(extent, threads), unit);
            return CeilDiv(extent, step);
        }

        public void Run(int part)
        {
            int start = part * step;
            if (splitRows) Blocked(g.Rows(start, Math.Min(step, g.M - start)), kernel);
            else Blocked(g.Columns(start, Math.Min(step, g.N - start)), kernel);
        }
    }

    /// <summary>The whole blocked loop nest on the calling thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Blocked(in GemmProblem g, GemmKernel kernel)
    {
        int mr = kernel.MR, nr = kernel.NR;
        // Balance the K slices, the row blocks and the column blocks so that none is a sliver.
        int kcStep = SliceDepth(g.K, kernel);
        int mcStep = RoundUp(CeilDiv(g.M, CeilDiv(g.M, kernel.MC)), mr);
        int ncStep = RoundUp(CeilDiv(g.N, CeilDiv(g.N, kernel.NC)), nr);
        float* packedA = Workspace.PackedA(mcStep * kcStep);
        var prepacked = g.Packed;
        float* packedB = prepacked is null ? Workspace.PackedB(ncStep * kcStep) : null;
        float* edge = stackalloc float[mr * nr];
        var run = kernel.Run;
        for (int jc = 0; jc < g.N; jc += ncStep)
        {
            int nc = Math.Min(ncStep, g.N - jc), panelsB = CeilDiv(nc, nr);
            for (int pc = 0; pc < g.K; pc += kcStep)
            {
                int kc = Math.Min(kcStep, g.K - pc);
                float beta = pc == 0 ? g.Beta : 1f; // later K slices add onto the first
                if (prepacked is null) PackBBlock(g, pc, kc, jc, nc, nr, packedB);
                else packedB = prepacked.Block(pc, kc, g.PackedColumn + jc);
                for (int ic = 0; ic < g.M; ic += mcStep)
                {
                    int mc = Math.Min(mcStep, g.M - ic);
                    Packing.PackABlock(g, ic, mc, pc, kc, mr, packedA);
                    for (int panel = 0; panel < panelsB; panel++)
                    {
                        float* bPanel = packedB + (nint)panel * kc * nr;
                        int j = panel * nr, cols = Math.Min(nr, nc - j);
                        for (int i = 0; i < mc; i += mr)
                        {
                            float* aPanel = packedA + (nint)(i / mr) * kc * mr;
                            float* c = g.C + (ic + i) * g.Ldc + jc + j;
                            int tileRows = Math.Min(mr, mc - i);
                            if (tileRows == mr && cols == nr)
                            {
                                run(kc, aPanel, bPanel, c, g.Ldc, g.Alpha, beta);
                            }
                            else
                            {
                                // Ragged edge: compute the full padded tile aside, then merge the valid part.
                                run(kc, aPanel, bPanel, edge, nr, 1f, 0f);
                                MergeEdge(edge, nr, c, g.Ldc, tileRows, cols, g.Alpha, beta);
                            }
                        }
                    }
                }
            }
        }
    }

    /// <summary>Depth of the K slices of a product with inner dimension <paramref name="k"/>: balanced, none a sliver.</summary>
    internal static int SliceDepth(int k, GemmKernel kernel) => CeilDiv(k, CeilDiv(k, kernel.KC));

    /// <summary>Rows [pc, pc+kc) and columns [jc, jc+nc) of op(B) into consecutive kc x nr panels.</summary>
    internal static void PackBBlock(in GemmProblem g, int pc, int kc, int jc, int nc, int nr, float* packedB)
    {
        int panelsB = CeilDiv(nc, nr);
        for (int first = 0; first < panelsB; first += PanelsPerPackPass)
        {
            int last = Math.Min(panelsB, first + PanelsPerPackPass);
            if (!g.TransB)
            {
                int c0 = first * nr;
                Packing.PackBRows(g, pc, kc, jc + c0, Math.Min(nc, last * nr) - c0, nr, packedB + (nint)first * kc * nr);
            }
            else
            {
                for (int panel = first; panel < last; panel++)
                    Packing.PackB(g, pc, kc, jc + panel * nr, Math.Min(nr, nc - panel * nr), nr, packedB + (nint)panel * kc * nr);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MergeEdge(float* tile, int nr, float* c, nint ldc, int rows, int cols, float alpha, float beta)
    {
        for (int r = 0; r < rows; r++)
        {
            float* t = tile + r * nr, cr = c + r * ldc;
            if (beta == 0f)
                for (int j = 0; j < cols; j++) cr[j] = alpha * t[j];
            else
                for (int j = 0; j < cols; j++) cr[j] = alpha * t[j] + beta * cr[j];
        }
    }

    internal static int CeilDiv(int a, int b) => (a + b - 1) / b;

    internal static int RoundUp(int a, int b) => CeilDiv(a, b) * b;
}

/// <summary>
/// Per-thread, grown-on-demand, pinned and 64-byte aligned packing buffers: the hot path allocates nothing
/// once they have reached their working size.
/// </summary>
internal static unsafe class Workspace
{
    [ThreadStatic] private static Buffer? a, b, small, sums;

    /// <summary>The packed-A buffer of this thread, at least <paramref name="floats"/> long.</summary>
    public static float* PackedA(int floats) => Grow(ref a, floats);

    /// <summary>The packed-B buffer of this thread, at least <paramref name="floats"/> long.</summary>
    public static float* PackedB(int floats) => Grow(ref b, floats);

    /// <summary>A scratch area for the small-M path (separate from the packing buffers).</summary>
    public static float* Small(int floats) => Grow(ref small, floats);

    /// <summary>Per-thread partial sums of the small-M path.</summary>
    public static float* Sums(int floats) => Grow(ref sums, floats);

    private static float* Grow(ref Buffer? buffer, int floats)
    {
        if (buffer is null || buffer.Capacity < floats) buffer = new Buffer(Math.Max(floats, (buffer?.Capacity ?? 0) * 3 / 2));
        return buffer.Pointer;
    }

    /// <summary>
    /// 64-byte aligned native memory. Buffers of 2 MB or more are 2 MB aligned and, on Linux, marked for
    /// transparent huge pages: a packed B block of several MB then takes a handful of TLB entries instead of
    /// a thousand. Freed by the finalizer.
    /// </summary>
    private sealed class Buffer
    {
        private const nuint HugePage = 2 << 20;
        private const int MadvHugePage = 14;

        public Buffer(int floats)
        {
            Capacity = floats;
            nuint bytes = (nuint)floats * sizeof(float);
            bool huge = bytes >= HugePage; // smaller buffers would waste most of a huge page
            if (huge) bytes = (bytes + HugePage - 1) & ~(HugePage - 1);
            Pointer = (float*)NativeMemory.AlignedAlloc(bytes, huge ? HugePage : 64);
            if (huge && OperatingSystem.IsLinux())
            {
                try { _ = Madvise(Pointer, bytes, MadvHugePage); }
                catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { } // only a hint
            }
        }

        ~Buffer() => NativeMemory.AlignedFree(Pointer);

        public int Capacity { get; }

        public float* Pointer { get; }

        [DllImport("libc", EntryPoint = "madvise")]
        private static extern int Madvise(void* address, nuint length, int advice);
    }
}
