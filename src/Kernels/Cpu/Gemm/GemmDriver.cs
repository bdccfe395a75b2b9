using System.Runtime.CompilerServices;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>
/// BLIS-style blocked GEMM. For each NC-wide column block of C and each KC-deep slice of K: pack the KC x NC
/// block of op(B) and the rows of op(A) (both in parallel), then run the micro-kernel over independent
/// (MC rows x column chunk) tiles of C in parallel. Inside a tile the B micro-panel stays in L1 while the
/// MC x KC block of A streams from L2.
/// </summary>
internal static unsafe class GemmDriver
{
    /// <summary>Below this many multiply-adds one thread is faster than waking others.</summary>
    internal const long ParallelVolume = 1L << 20;

    /// <summary>At most this many rows of op(A) are packed at once (bounds the packed A buffer).</summary>
    private const int MaxPackedRows = 3072;

    /// <summary>B panels packed per task: plain B is then read in runs of up to 8 NR-wide segments per row.</summary>
    private const int PanelsPerPackTask = 8;

    /// <summary>C = alpha op(A) op(B) + beta C. <paramref name="threads"/> = 1 runs on the calling thread only.</summary>
    public static void Multiply(in GemmProblem g, GemmKernel kernel, ParallelOptions parallel, int threads)
    {
        if (g.M == 0 || g.N == 0) return;
        if (g.K == 0 || g.Alpha == 0f)
        {
            ScaleC(g);
            return;
        }
        if (g.Volume < ParallelVolume) threads = 1;
        if (SmallM.Applies(g))
        {
            SmallM.Multiply(g, parallel, threads);
            return;
        }
        new Job(g, kernel, parallel, threads).Run();
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

    /// <summary>One blocked multiplication: the loop state shared by the packing and compute tasks.</summary>
    private sealed class Job
    {
        private readonly GemmProblem g;
        private readonly GemmKernel kernel;
        private readonly ParallelOptions parallel;
        private readonly int threads;
        private readonly int mr, nr;
        private readonly float* packedA, packedB;
        private readonly Action<int> packTask, computeTask;

        // Current block: columns [jc, jc+nc), depth [pc, pc+kc), rows [ms, ms+rows).
        private int jc, nc, pc, kc, ms, rows;
        private float beta;
        private int panelsA, panelsB;
        private bool packB;
        private int mcBlock, icBlocks, panelsPerChunk, chunks;

        public Job(in GemmProblem g, GemmKernel kernel, ParallelOptions parallel, int threads)
        {
            this.g = g;
            this.kernel = kernel;
            this.parallel = parallel;
            this.threads = threads;
            mr = kernel.MR;
            nr = kernel.NR;
            int kcMax = Math.Min(kernel.KC, g.K);
            int ncMax = Math.Min(kernel.NC, RoundUp(g.N, nr));
            int mMax = Math.Min(MaxPackedRows, RoundUp(g.M, mr));
            packedA = Workspace.PackedA(mMax * kcMax);
            packedB = Workspace.PackedB(ncMax * kcMax);
            packTask = Pack;
            computeTask = Compute;
        }

        public void Run()
        {
            // Balance the K slices so the last one is not a sliver.
            int kSlices = CeilDiv(g.K, kernel.KC);
            int kcStep = CeilDiv(g.K, kSlices);
            for (jc = 0; jc < g.N; jc += kernel.NC)
            {
                nc = Math.Min(kernel.NC, g.N - jc);
                panelsB = CeilDiv(nc, nr);
                for (pc = 0; pc < g.K; pc += kcStep)
                {
                    kc = Math.Min(kcStep, g.K - pc);
                    beta = pc == 0 ? g.Beta : 1f; // later K slices add onto the first
                    for (ms = 0; ms < g.M; ms += MaxPackedRows)
                    {
                        rows = Math.Min(MaxPackedRows, g.M - ms);
                        panelsA = CeilDiv(rows, mr);
                        packB = ms == 0; // the packed B block serves every row block
                        PlanTiles();
                        For(panelsA + (packB ? CeilDiv(panelsB, PanelsPerPackTask) : 0), packTask);
                        For(icBlocks * chunks, computeTask);
                    }
                }
            }
        }

        /// <summary>Split rows into MC-sized blocks and columns into chunks so every thread gets work.</summary>
        private void PlanTiles()
        {
            icBlocks = CeilDiv(rows, kernel.MC);
            mcBlock = RoundUp(CeilDiv(rows, icBlocks), mr);
            icBlocks = CeilDiv(rows, mcBlock);
            // Aim for a few tiles per thread so the dynamic scheduler can even out the ragged ones.
            int wanted = threads == 1 ? 1 : CeilDiv(3 * threads, icBlocks);
            chunks = Math.Clamp(wanted, 1, panelsB);
            panelsPerChunk = CeilDiv(panelsB, chunks);
            chunks = CeilDiv(panelsB, panelsPerChunk);
        }

        private void For(int count, Action<int> body)
        {
            if (threads == 1 || count == 1)
                for (int i = 0; i < count; i++) body(i);
            else
                System.Threading.Tasks.Parallel.For(0, count, parallel, body);
        }

        /// <summary>Task i: one MR-row panel of A, or (after the A panels) a group of NR-column panels of B.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Pack(int i)
        {
            if (i < panelsA)
            {
                int r0 = i * mr;
                Packing.PackA(g, ms + r0, Math.Min(mr, rows - r0), pc, kc, mr, packedA + (nint)i * kc * mr);
            }
            else
            {
                int first = (i - panelsA) * PanelsPerPackTask, last = Math.Min(panelsB, first + PanelsPerPackTask);
                int c0 = first * nr, cols = Math.Min(nc, last * nr) - c0;
                float* dst = packedB + (nint)first * kc * nr;
                if (!g.TransB) Packing.PackBRows(g, pc, kc, jc + c0, cols, nr, dst);
                else
                    for (int panel = first; panel < last; panel++)
                        Packing.PackB(g, pc, kc, jc + panel * nr, Math.Min(nr, nc - panel * nr), nr, packedB + (nint)panel * kc * nr);
            }
        }

        /// <summary>Task t: the micro-kernel over one MC row block and one chunk of NR-column panels.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Compute(int t)
        {
            int ic = t / chunks, chunk = t % chunks;
            int i0 = ic * mcBlock, i1 = Math.Min(rows, i0 + mcBlock);
            int p0 = chunk * panelsPerChunk, p1 = Math.Min(panelsB, p0 + panelsPerChunk);
            float* edge = stackalloc float[mr * nr];
            var run = kernel.Run;
            for (int panel = p0; panel < p1; panel++)
            {
                float* bPanel = packedB + (nint)panel * kc * nr;
                int j = panel * nr, cols = Math.Min(nr, nc - j);
                for (int i = i0; i < i1; i += mr)
                {
                    float* aPanel = packedA + (nint)(i / mr) * kc * mr;
                    float* c = g.C + (ms + i) * g.Ldc + jc + j;
                    int tileRows = Math.Min(mr, i1 - i);
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

    private sealed class Buffer
    {
        private readonly float[] data;

        public Buffer(int floats)
        {
            Capacity = floats;
            data = GC.AllocateUninitializedArray<float>(floats + 16, pinned: true);
            fixed (float* p = data) Pointer = (float*)(((nint)p + 63) & ~(nint)63);
        }

        public int Capacity { get; }

        public float* Pointer { get; }
    }
}
