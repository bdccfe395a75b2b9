using UioLlm.Kernels.Cpu.Gemm;

namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    /// <summary>SIMD width of the GEMM micro-kernel; tests force <see cref="GemmWidth.Vector512"/> to exercise that path.</summary>
    internal GemmWidth GemmWidth { get; init; }

    public void MatMul(Tensor a, Tensor b, Tensor c, bool transA = false, bool transB = false, float alpha = 1f, float beta = 0f)
    {
        const string op = "MatMul";
        var s = MatMulShape.Of(op, a, b, c, "c", transA, transB);
        Guard.Writable(op, c, "c");
        Guard.Finite(op, alpha, nameof(alpha));
        Guard.Finite(op, beta, nameof(beta));
        s.Run(this, a, transA, s.StrideA, b, transB, s.StrideB, c, s.StrideC, s.M, s.N, s.K, alpha, beta);
    }

    public void MatMulStrided(Tensor a, MatrixLayout la, bool transA, Tensor b, MatrixLayout lb, bool transB,
        Tensor c, MatrixLayout lc, int m, int n, int k, int batch = 1, float alpha = 1f, float beta = 0f)
    {
        const string op = "MatMulStrided";
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        ArgumentNullException.ThrowIfNull(c);
        OnCpu(op, a, "a");
        CheckStrided(op, a, la, transA, b, lb, transB, c, lc, m, n, k, batch, alpha, beta);
        if (batch == 0) return;
        unsafe
        {
            var first = new GemmProblem(a.Pointer + la.Offset, la.LeadingDim, transA, b.Pointer + lb.Offset, lb.LeadingDim, transB,
                c.Pointer + lc.Offset, lc.LeadingDim, m, n, k, alpha, beta);
            RunBatched(first, la.BatchStride, lb.BatchStride, lc.BatchStride, batch);
        }
    }

    public void MatMulBackward(Tensor a, Tensor b, Tensor dc, Tensor? da, Tensor? db, bool transA = false, bool transB = false)
    {
        const string op = "MatMulBackward";
        var s = MatMulShape.Of(op, a, b, dc, "dc", transA, transB);
        Guard.Gradient(op, a.Accelerator, da, "da", a, "a");
        Guard.Gradient(op, a.Accelerator, db, "db", b, "b");
        // c = op(a) op(b): d op(a) = dc op(b)^T and d op(b) = op(a)^T dc, written in each operand's own layout.
        // A broadcast operand's gradient has batch stride 0, so the per-batch products add up in it.
        if (da is not null)
        {
            if (!transA) s.Run(this, dc, false, s.StrideC, b, !transB, s.StrideB, da, s.StrideA, s.M, s.K, s.N, 1f, 1f); // [M,N] op(b)^T
            else s.Run(this, b, transB, s.StrideB, dc, true, s.StrideC, da, s.StrideA, s.K, s.M, s.N, 1f, 1f);       // op(b) dc^T
        }
        if (db is not null)
        {
            if (!transB) s.Run(this, a, !transA, s.StrideA, dc, false, s.StrideC, db, s.StrideB, s.K, s.N, s.M, 1f, 1f); // op(a)^T dc
            else s.Run(this, dc, true, s.StrideC, a, transA, s.StrideA, db, s.StrideB, s.N, s.K, s.M, 1f, 1f);        // dc^T op(a)
        }
    }

    /// <summary>Rank-2 contiguous c = alpha op(a) op(b) + beta c, shapes already checked by the caller (LoRA).</summary>
    internal unsafe void Gemm(Tensor a, bool transA, Tensor b, bool transB, Tensor c, float alpha, float beta)
    {
        int m = c.Dim(0), n = c.Dim(1), k = transA ? a.Dim(0) : a.Dim(1);
        var g = new GemmProblem(a.Pointer, a.Dim(1), transA, b.Pointer, b.Dim(1), transB, c.Pointer, c.Dim(1), m, n, k, alpha, beta,
            b.IsFrozen ? b : null);
        GemmDriver.Multiply(g, GemmKernel.Select(GemmWidth), Threads);
    }

    /// <summary>
    /// Runs <paramref name="batch"/> products whose operands advance by the given strides. A C stride of 0
    /// (only used internally, for the gradient of a broadcast operand) adds every product into the one C.
    /// </summary>
    private unsafe void RunBatched(GemmProblem first, nint strideA, nint strideB, nint strideC, int batch)
    {
        var kernel = GemmKernel.Select(GemmWidth);
        if (batch == 1)
        {
            GemmDriver.Multiply(first, kernel, Threads); // keeps a frozen B's panels
            return;
        }
        if (strideC == 0)
        {
            for (int i = 0; i < batch; i++)
            {
                var g = first.At(first.A + i * strideA, first.B + i * strideB, first.C);
                GemmDriver.Multiply(i == 0 ? g : g.WithBeta(1f), kernel, Threads);
            }
            return;
        }
        if (Threads > 1 && first.Volume < GemmDriver.ParallelVolume)
        {
            // Many small products (e.g. per-head attention blocks): one product per task.
            ParallelFor(batch, i =>
                GemmDriver.Multiply(first.At(first.A + i * strideA, first.B + i * strideB, first.C + i * strideC), kernel, 1));
            return;
        }
        for (int i = 0; i < batch; i++)
            GemmDriver.Multiply(first.At(first.A + i * strideA, first.B + i * strideB, first.C + i * strideC), kernel, Threads);
    }

    private static void OnCpu(string op, Tensor t, string name)
    {
        t.Memory.ThrowIfDisposed();
        if (!t.Memory.IsHostAccessible)
            throw new ArgumentException($"{op}: {name} {t.ShapeString} is not in host memory; the CPU kernels need CPU tensors", name);
    }

    /// <summary>
    /// MatMulStrided's arguments once the backend has checked a: one accelerator, c writable, sizes not negative,
    /// finite scalars, every layout inside its tensor, and no two output matrices sharing elements.
    /// </summary>
    internal static void CheckStrided(string op, Tensor a, MatrixLayout la, bool transA, Tensor b, MatrixLayout lb, bool transB,
        Tensor c, MatrixLayout lc, int m, int n, int k, int batch, float alpha, float beta)
    {
        Guard.On(op, a.Accelerator, b, "b");
        Guard.On(op, a.Accelerator, c, "c");
        Guard.Writable(op, c, "c");
        if (m < 0) throw new ArgumentOutOfRangeException(nameof(m), m, $"{op}: m must not be negative");
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, $"{op}: n must not be negative");
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(k), k, $"{op}: k must not be negative");
        if (batch < 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, $"{op}: batch must not be negative");
        Guard.Finite(op, alpha, nameof(alpha));
        Guard.Finite(op, beta, nameof(beta));
        CheckLayout(op, a, "a", la, transA ? k : m, transA ? m : k, batch);
        CheckLayout(op, b, "b", lb, transB ? n : k, transB ? k : n, batch);
        CheckLayout(op, c, "c", lc, m, n, batch);
        CheckNoOverlap(op, c, "c", lc, m, n, batch);
    }

    /// <summary>Every element a strided layout addresses (rows x cols per matrix, batch matrices) lies inside the tensor.</summary>
    internal static void CheckLayout(string op, Tensor t, string name, MatrixLayout l, int rows, int cols, int batch)
    {
        string where = $"{op}: {name} layout (offset {l.Offset}, leading dim {l.LeadingDim}, batch stride {l.BatchStride})";
        if (l.Offset < 0) throw new ArgumentException($"{where} has a negative offset", name);
        if (l.BatchStride < 0) throw new ArgumentException($"{where} has a negative batch stride", name);
        if (l.LeadingDim < Math.Max(1, cols))
            throw new ArgumentException($"{where}: leading dim must be at least the row length {cols}", name);
        if (rows == 0 || cols == 0 || batch == 0) return;
        long last = l.Offset + (long)(batch - 1) * l.BatchStride + (long)(rows - 1) * l.LeadingDim + cols - 1;
        if (last >= t.Length)
            throw new ArgumentException($"{where} addresses element {last} of a {rows}x{cols} matrix (batch {batch}), but {name} {t.ShapeString} has {t.Length} elements", name);
    }

    /// <summary>Output matrices of different batch entries must not share elements (they would race).</summary>
    internal static void CheckNoOverlap(string op, Tensor t, string name, MatrixLayout l, int rows, int cols, int batch)
    {
        if (batch <= 1 || rows == 0 || cols == 0) return;
        long stride = l.BatchStride, span = (long)(rows - 1) * l.LeadingDim + cols;
        bool separate = stride >= span;
        bool interleaved = stride >= cols && (batch - 1) * stride + cols <= l.LeadingDim; // e.g. heads side by side in a row
        if (!separate && !interleaved)
            throw new ArgumentException($"{op}: {name} layout (offset {l.Offset}, leading dim {l.LeadingDim}, batch stride {l.BatchStride}) makes the {batch} output matrices of {name} {t.ShapeString} overlap", name);
    }

    /// <summary>The GEMM dimensions and batch strides of a checked tensor-level MatMul.</summary>
    internal readonly record struct MatMulShape(int Batch, int M, int N, int K, int StrideA, int StrideB, int StrideC)
    {
        public static MatMulShape Of(string op, Tensor a, Tensor b, Tensor c, string cName, bool transA, bool transB, bool host = true)
        {
            ArgumentNullException.ThrowIfNull(a);
            ArgumentNullException.ThrowIfNull(b);
            ArgumentNullException.ThrowIfNull(c);
            if (host) OnCpu(op, a, "a");
            else a.Memory.ThrowIfDisposed();
            Guard.On(op, a.Accelerator, b, "b");
            Guard.On(op, a.Accelerator, c, cName);
            if (a.Rank is not (2 or 3)) Guard.Rank(op, a, "a", 2, transA ? "[K, M] or [batch, K, M]" : "[M, K] or [batch, M, K]");
            if (b.Rank is not (2 or 3)) Guard.Rank(op, b, "b", 2, transB ? "[N, K] or [batch, N, K]" : "[K, N] or [batch, K, N]");
            int m = transA ? a.Dim(-1) : a.Dim(-2), k = transA ? a.Dim(-2) : a.Dim(-1);
            int kb = transB ? b.Dim(-1) : b.Dim(-2), n = transB ? b.Dim(-2) : b.Dim(-1);
            if (kb != k)
                throw new ArgumentException($"{op}: b has shape {b.ShapeString}, expected {(transB ? $"[.., N, {k}]" : $"[.., {k}, N]")} to match K = {k} of a {a.ShapeString}{(transA ? " (transposed)" : "")}", "b");
            int batch = a.Rank == 3 ? a.Dim(0) : b.Rank == 3 ? b.Dim(0) : 1;
            if (a.Rank == 3 && b.Rank == 3 && b.Dim(0) != batch)
                throw new ArgumentException($"{op}: b has shape {b.ShapeString} but a has shape {a.ShapeString}; their batch sizes must match", "b");
            if (a.Rank == 3 || b.Rank == 3) Guard.Shape(op, c, cName, batch, m, n);
            else Guard.Shape(op, c, cName, m, n);

            // x [batch, M, K] times a shared weight is one tall product over batch*M rows.
            if (a.Rank == 3 && b.Rank == 2 && !transA) return new MatMulShape(1, batch * m, n, k, 0, 0, 0);
            return new MatMulShape(batch, m, n, k, a.Rank == 3 ? m * k : 0, b.Rank == 3 ? k * n : 0, a.Rank == 3 || b.Rank == 3 ? m * n : 0);
        }

        /// <summary>
        /// out = alpha op(x) op(y) + beta out, an m x n x k product per batch entry, each operand advancing by
        /// its batch stride (an out stride of 0 over several entries sums them). Leading dims are last axes.
        /// </summary>
        public unsafe void Run(CpuKernels kernels, Tensor x, bool transX, int strideX, Tensor y, bool transY, int strideY,
            Tensor output, int strideOut, int m, int n, int k, float alpha, float beta)
        {
            if (Batch == 0) return;
            // A whole frozen matrix as the shared B operand (a weight) is read from its pre-packed panels.
            var frozenB = Batch == 1 && y.IsFrozen && y.Rank == 2 ? y : null;
            var g = new GemmProblem(x.Pointer, x.Dim(-1), transX, y.Pointer, y.Dim(-1), transY, output.Pointer, output.Dim(-1),
                m, n, k, alpha, beta, frozenB);
            kernels.RunBatched(g, strideX, strideY, strideOut, Batch);
        }
    }
}
