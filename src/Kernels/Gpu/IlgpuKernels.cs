using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using UioLlm.Kernels.Cpu;

namespace UioLlm.Kernels.Gpu;

/// <summary>
/// The ILGPU implementation of <see cref="IKernels"/>. Arguments go through the same checks as the CPU backend (its
/// shape checks with the host requirement off); then <see cref="DeviceCode"/> kernels are queued on the accelerator's
/// stream. Host spans (ids, targets, positions, RoPE cos/sin rows) are staged into device buffers. Ops that return a
/// value to the host (CrossEntropy, GlobalNorm) synchronize.
/// </summary>
public sealed partial class IlgpuKernels : IKernels
{
    private readonly IlgpuAccelerator acc;
    private readonly ILGPU.Runtime.Accelerator dev;
    private MemoryBuffer1D<int, Stride1D.Dense>? intStage;
    private MemoryBuffer1D<float, Stride1D.Dense>? floatStage;
    private MemoryBuffer1D<double, Stride1D.Dense>? doubleStage;

    internal IlgpuKernels(IlgpuAccelerator accelerator)
    {
        acc = accelerator;
        dev = accelerator.Device;
    }

    internal void Release()
    {
        intStage = null;
        floatStage = null;
        doubleStage = null;
    }

    /// <summary>Most floats of dynamic shared memory a kernel asks for (48 KB: no opt-in attribute needed).</summary>
    public const int SharedFloats = 48 * 1024 / 4;

    /// <summary>
    /// Queries (and keys) per attention group for head dimension <paramref name="d"/>: the largest power of two up to 32
    /// whose four D-wide tiles fit in <see cref="SharedFloats"/>; 0 when not even one row each fits.
    /// </summary>
    public static int AttentionBlock(int d)
    {
        for (int t = 32; t >= 1; t /= 2)
            if (4L * t * d <= SharedFloats) return t;
        return 0;
    }

    /// <summary>Whether this backend runs <paramref name="op"/> on operands of this shape (see <see cref="KernelSupport"/>).</summary>
    public bool Supports(KernelOp op, ReadOnlySpan<int> shape) => KernelSupport.Ilgpu(op, shape);

    // ------------------------------------------------------------------------------------------ kernels (loaded on first use)

    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>? gemm;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>? add, multiply, swiglu;
    private Action<Index1D, ArrayView<float>, float, ArrayView<float>>? scaleKernel;
    private Action<Index1D, float, ArrayView<float>, ArrayView<float>>? axpy;
    private Action<Index1D, ArrayView<float>, float>? fill;
    private Action<Index1D, ArrayView<float>, ArrayView<float>>? copy;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? swigluBackward;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWArgs>? adamw;
    private Action<KernelConfig, ArrayView<float>, ArrayView<double>>? sumSquares;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeArgs>? rope;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float>? rmsnorm;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? rmsnormDx;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? rmsnormDw;
    private Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>? embedding;
    private Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int>? embeddingBackward;
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>? crossEntropy;
    private Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float>? crossEntropyBackward;
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, float>? crossEntropyFused;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionArgs>? attentionForward;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>? attentionDelta;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionArgs>? attentionBackwardQuery;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, AttentionArgs>? attentionBackwardKeyValue;

    // ------------------------------------------------------------------------------------------ helpers

    /// <summary>The first tensor of an op: not null, not disposed, on this accelerator.</summary>
    private void Device(string op, Tensor? t, string name)
    {
        if (t is null) throw new ArgumentNullException(name, $"{op}: {name} is null");
        if (!ReferenceEquals(t.Accelerator, acc))
            throw new ArgumentException($"{op}: {name} {t.ShapeString} lives on {t.Accelerator.Description}, not on {acc.Description}", name);
        t.Memory.ThrowIfDisposed();
    }

    private static ArrayView<float> V(Tensor t) => ((IlgpuMemory)t.Memory).View(t.Offset, t.Length);

    private static ArrayView<float> V(Tensor? t, Tensor fallback) => t is null ? V(fallback) : V(t);

    /// <summary>Elements [offset, offset + count) of a tensor's storage.</summary>
    private static ArrayView<float> V(Tensor t, long offset, long count) => ((IlgpuMemory)t.Memory).View(t.Offset + (int)offset, (int)count);

    private ArrayView<int> StageInts(ReadOnlySpan<int> data)
    {
        if (intStage is null || intStage.Length < data.Length)
        {
            dev.Synchronize();
            intStage?.Dispose();
            intStage = dev.Allocate1D<int>(Math.Max(1024, (long)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)data.Length)));
        }
        var view = intStage.View.SubView(0, Math.Max(1, data.Length)).BaseView;
        if (data.Length > 0) view.SubView(0, data.Length).CopyFromCPU(ref MemoryMarshal.GetReference(data), data.Length);
        return view;
    }

    private ArrayView<float> StageFloats(ReadOnlySpan<float> data)
    {
        if (floatStage is null || floatStage.Length < data.Length)
        {
            dev.Synchronize();
            floatStage?.Dispose();
            floatStage = dev.Allocate1D<float>(Math.Max(1024, (long)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)data.Length)));
        }
        var view = floatStage.View.SubView(0, Math.Max(1, data.Length)).BaseView;
        if (data.Length > 0) view.SubView(0, data.Length).CopyFromCPU(ref MemoryMarshal.GetReference(data), data.Length);
        return view;
    }

    private ArrayView<double> DoubleScratch(int length)
    {
        if (doubleStage is null || doubleStage.Length < length)
        {
            dev.Synchronize();
            doubleStage?.Dispose();
            doubleStage = dev.Allocate1D<double>(Math.Max(1024, length));
        }
        return doubleStage.View.SubView(0, length).BaseView;
    }

    private static KernelConfig Config(int gx, int gy, int gz, int bx, int by = 1, int sharedFloats = 0) =>
        new(new Index3D(gx, gy, gz), new Index3D(bx, by, 1),
            sharedFloats > 0 ? SharedMemoryConfig.RequestDynamic<float>(sharedFloats) : SharedMemoryConfig.Empty);

    private static int CeilDiv(long a, int b) => (int)((a + b - 1) / b);

    /// <summary>Groups for a one-group-per-row kernel (grid-stride over the rest).</summary>
    private static int RowGroups(int rows) => Math.Min(rows, 65535);

    // ------------------------------------------------------------------------------------------ GEMM

    /// <summary>
    /// C[i] = alpha op(A[i]) op(B[i]) + beta C[i] for i &lt; batch, operands as element offsets into their tensors
    /// advancing by the given strides. A C stride of 0 with batch &gt; 1 sums every product into the one C.
    /// </summary>
    private void Gemm(Tensor a, long offA, int lda, long strideA, bool transA, Tensor b, long offB, int ldb, long strideB, bool transB,
        Tensor c, long offC, int ldc, long strideC, int m, int n, int k, int batch, float alpha, float beta)
    {
        if (m == 0 || n == 0 || batch == 0) return;
        if (strideC == 0 && batch > 1)
        {
            for (int i = 0; i < batch; i++)
                Gemm(a, offA + i * strideA, lda, 0, transA, b, offB + i * strideB, ldb, 0, transB, c, offC, ldc, 0, m, n, k, 1, alpha, i == 0 ? beta : 1f);
            return;
        }
        gemm ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(DeviceCode.Gemm);
        const int maxZ = 65535;
        for (int first = 0; first < batch; first += maxZ)
        {
            int count = Math.Min(batch - first, maxZ);
            // Views from each operand's first element to the end of its storage; the kernel indexes inside them.
            long a0 = offA + first * strideA, b0 = offB + first * strideB, c0 = offC + first * strideC;
            var args = new GemmArgs
            {
                M = m, N = n, K = k, Lda = lda, Ldb = ldb, Ldc = ldc, TransA = transA ? 1 : 0, TransB = transB ? 1 : 0,
                StrideA = strideA, StrideB = strideB, StrideC = strideC, Alpha = alpha, Beta = beta,
            };
            gemm(Config(CeilDiv(n, DeviceCode.GemmTile), CeilDiv(m, DeviceCode.GemmTile), count, DeviceCode.GemmTile, DeviceCode.GemmRowThreads),
                V(a, a0, a.Length - a0), V(b, b0, b.Length - b0), V(c, c0, c.Length - c0), args);
        }
    }

    public void MatMul(Tensor a, Tensor b, Tensor c, bool transA = false, bool transB = false, float alpha = 1f, float beta = 0f)
    {
        const string op = "MatMul";
        if (a is not null) Device(op, a, "a");
        var s = CpuKernels.MatMulShape.Of(op, a!, b, c, "c", transA, transB, host: false);
        Guard.Writable(op, c, "c");
        Guard.Finite(op, alpha, nameof(alpha));
        Guard.Finite(op, beta, nameof(beta));
        lock (acc.Sync) Run(s, a!, transA, s.StrideA, b, transB, s.StrideB, c, s.StrideC, s.M, s.N, s.K, alpha, beta);
    }

    private void Run(CpuKernels.MatMulShape s, Tensor x, bool transX, int strideX, Tensor y, bool transY, int strideY,
        Tensor output, int strideOut, int m, int n, int k, float alpha, float beta)
    {
        if (s.Batch == 0) return;
        Gemm(x, 0, x.Dim(-1), strideX, transX, y, 0, y.Dim(-1), strideY, transY, output, 0, output.Dim(-1), strideOut,
            m, n, k, s.Batch, alpha, beta);
    }

    public void MatMulStrided(Tensor a, MatrixLayout la, bool transA, Tensor b, MatrixLayout lb, bool transB,
        Tensor c, MatrixLayout lc, int m, int n, int k, int batch = 1, float alpha = 1f, float beta = 0f)
    {
        const string op = "MatMulStrided";
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        ArgumentNullException.ThrowIfNull(c);
        Device(op, a, "a");
        CpuKernels.CheckStrided(op, a, la, transA, b, lb, transB, c, lc, m, n, k, batch, alpha, beta);
        if (batch == 0) return;
        lock (acc.Sync)
            Gemm(a, la.Offset, la.LeadingDim, la.BatchStride, transA, b, lb.Offset, lb.LeadingDim, lb.BatchStride, transB,
                c, lc.Offset, lc.LeadingDim, batch == 1 ? 1 : lc.BatchStride, m, n, k, batch, alpha, beta);
    }

    public void MatMulBackward(Tensor a, Tensor b, Tensor dc, Tensor? da, Tensor? db, bool transA = false, bool transB = false)
    {
        const string op = "MatMulBackward";
        if (a is not null) Device(op, a, "a");
        var s = CpuKernels.MatMulShape.Of(op, a!, b, dc, "dc", transA, transB, host: false);
        Guard.Gradient(op, acc, da, "da", a!, "a");
        Guard.Gradient(op, acc, db, "db", b, "b");
        lock (acc.Sync)
        {
            if (da is not null)
            {
                if (!transA) Run(s, dc, false, s.StrideC, b, !transB, s.StrideB, da, s.StrideA, s.M, s.K, s.N, 1f, 1f);
                else Run(s, b, transB, s.StrideB, dc, true, s.StrideC, da, s.StrideA, s.K, s.M, s.N, 1f, 1f);
            }
            if (db is not null)
            {
                if (!transB) Run(s, a!, !transA, s.StrideA, dc, false, s.StrideC, db, s.StrideB, s.K, s.N, s.M, 1f, 1f);
                else Run(s, dc, true, s.StrideC, a!, transA, s.StrideA, db, s.StrideB, s.N, s.K, s.M, 1f, 1f);
            }
        }
    }

    /// <summary>Rank-2 contiguous product on tensors already checked (LoRA).</summary>
    private void Gemm2(Tensor a, bool transA, Tensor b, bool transB, Tensor c, float alpha, float beta)
    {
        int m = c.Dim(0), n = c.Dim(1), k = transA ? a.Dim(0) : a.Dim(1);
        Gemm(a, 0, a.Dim(1), 0, transA, b, 0, b.Dim(1), 0, transB, c, 0, c.Dim(1), 0, m, n, k, 1, alpha, beta);
    }

    // ------------------------------------------------------------------------------------------ LoRA

    public void LoraMatMul(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor xa)
    {
        const string op = "LoraMatMul";
        if (x is not null) Device(op, x, "x");
        var s = CpuKernels.LoraShape.Of(op, x!, w, loraA, loraB, scale, host: false);
        Guard.On(op, acc, y, "y");
        Guard.On(op, acc, xa, "xa");
        Guard.Shape(op, y, "y", s.LeadingShape(x!, s.Out));
        Guard.Shape(op, xa, "xa", s.LeadingShape(x!, s.Rank));
        Guard.Writable(op, y, "y");
        Guard.Writable(op, xa, "xa");
        Tensor x2 = s.Flat(x!, s.In), y2 = s.Flat(y, s.Out), xa2 = s.Flat(xa, s.Rank);
        lock (acc.Sync)
        {
            Gemm2(x2, false, loraA, true, xa2, 1f, 0f);
            Gemm2(x2, false, w, true, y2, 1f, 0f);
            Gemm2(xa2, false, loraB, true, y2, scale, 1f);
        }
    }

    public void LoraMatMulBackward(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor xa, Tensor dy,
        Tensor? dx, Tensor? dA, Tensor? dB)
    {
        const string op = "LoraMatMulBackward";
        if (x is not null) Device(op, x, "x");
        var s = CpuKernels.LoraShape.Of(op, x!, w, loraA, loraB, scale, host: false);
        Guard.On(op, acc, xa, "xa");
        Guard.On(op, acc, dy, "dy");
        Guard.Shape(op, xa, "xa", s.LeadingShape(x!, s.Rank));
        Guard.Shape(op, dy, "dy", s.LeadingShape(x!, s.Out));
        Guard.Gradient(op, acc, dx, "dx", x!, "x");
        Guard.Gradient(op, acc, dA, "dA", loraA, "loraA");
        Guard.Gradient(op, acc, dB, "dB", loraB, "loraB");
        Tensor x2 = s.Flat(x!, s.In), xa2 = s.Flat(xa, s.Rank), dy2 = s.Flat(dy, s.Out);
        if (dB is not null) lock (acc.Sync) Gemm2(dy2, true, xa2, false, dB, scale, 1f);
        if (dx is null && dA is null) return;
        using var dxa = acc.Scratch.Rent(s.Rows, s.Rank);
        lock (acc.Sync)
        {
            Gemm2(dy2, false, loraB, false, dxa, scale, 0f);
            if (dA is not null) Gemm2(dxa, true, x2, false, dA, 1f, 1f);
            if (dx is not null)
            {
                var dx2 = s.Flat(dx, s.In);
                Gemm2(dy2, false, w, false, dx2, 1f, 1f);
                Gemm2(dxa, false, loraA, false, dx2, 1f, 1f);
            }
        }
    }

    // ------------------------------------------------------------------------------------------ RoPE

    public void Rope(Tensor x, Tensor y, ReadOnlySpan<int> positions, RopeTable table)
    {
        const string op = "Rope";
        if (x is not null) Device(op, x, "x");
        var shape = CpuKernels.CheckRope(op, x!, "x", positions, table, host: false);
        OpsCheck.On(op, acc, y, "y");
        Guard.SameShape(op, x!, "x", y, "y");
        Guard.Writable(op, y, "y");
        OpsCheck.SameOrDisjoint(op, x!, "x", y, "y");
        RunRope(shape, x!, y, positions, table, backward: false);
    }

    public void RopeBackward(Tensor dy, Tensor dx, ReadOnlySpan<int> positions, RopeTable table)
    {
        const string op = "RopeBackward";
        if (dy is not null) Device(op, dy, "dy");
        var shape = CpuKernels.CheckRope(op, dy!, "dy", positions, table, host: false);
        OpsCheck.On(op, acc, dx, "dx");
        Guard.SameShape(op, dy!, "dy", dx, "dx");
        Guard.Writable(op, dx, "dx");
        OpsCheck.Disjoint(op, dy!, "dy", dx, "dx");
        RunRope(shape, dy!, dx, positions, table, backward: true);
    }

    /// <summary>cos / sin rows per position entry are computed on the host in double (as the CPU backend does), then staged.</summary>
    private void RunRope(CpuKernels.RopeShape s, Tensor src, Tensor dst, ReadOnlySpan<int> positions, RopeTable table, bool backward)
    {
        int half = s.HeadDim / 2;
        if (positions.Length == 0 || s.Heads == 0 || half == 0) return;
        var trig = new float[2 * positions.Length * half];
        var inv = table.InverseFrequency;
        double factor = table.AttentionFactor;
        for (int p = 0; p < positions.Length; p++)
            for (int i = 0; i < half; i++)
            {
                var (sa, ca) = Math.SinCos(positions[p] * inv[i]);
                trig[p * half + i] = (float)(ca * factor);
                trig[(positions.Length + p) * half + i] = (float)(sa * factor) * (backward ? -1f : 1f);
            }
        lock (acc.Sync)
        {
            rope ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeArgs>(DeviceCode.Rope);
            var staged = StageFloats(trig);
            int n = positions.Length * half;
            var args = new RopeArgs
            {
                Count = positions.Length, Heads = s.Heads, HeadDim = s.HeadDim, RowsPerPosition = s.SharedPositions ? s.Batch : 1,
                Tokens = s.Tokens, Interleaved = table.Layout == RopeLayout.Interleaved ? 1 : 0, Accumulate = backward ? 1 : 0,
            };
            rope(positions.Length * s.Heads * half, V(src), V(dst), staged.SubView(0, n), staged.SubView(n, n), args);
        }
    }
}
