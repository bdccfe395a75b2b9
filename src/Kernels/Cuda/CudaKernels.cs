using System.Runtime.InteropServices;
using UioLlm.Kernels.Cpu;

namespace UioLlm.Kernels.Cuda;

/// <summary>
/// The CUDA implementation of <see cref="IKernels"/>. Arguments are checked by the same code as the CPU
/// backend (the CPU ops' shape checks with the host requirement switched off), then kernels are queued on the
/// accelerator's stream. Host spans (ids, targets, positions) are staged into device scratch in stream order.
/// Ops that return a value to the host (CrossEntropy, GlobalNorm) synchronize.
/// </summary>
public sealed unsafe partial class CudaKernels : IKernels
{
    private const string GemmSource = "gemm.cu";
    private const string AttentionSource = "attention.cu";
    private const string RopeSource = "rope.cu";
    private const string NormSource = "norm.cu";
    private const string LossSource = "loss.cu";
    private const string OptimizerSource = "optimizer.cu";
    private const string ElementwiseSource = "elementwise.cu";

    private readonly CudaAccelerator acc;
    private readonly object stagingLock = new();
    private ulong staging;
    private long stagingBytes;

    internal CudaKernels(CudaAccelerator accelerator) => acc = accelerator;

    /// <summary>Every (source, kernel) this backend launches, for compile checks and resource reports.</summary>
    public static IReadOnlyList<(string Source, string Kernel)> AllKernels => allKernels.Value;

    private static readonly Lazy<List<(string, string)>> allKernels = new(BuildKernelList);

    private static List<(string, string)> BuildKernelList()
    {
        var list = new List<(string, string)>();
        foreach (char size in "lms")
            foreach (string t in new[] { "nn", "nt", "tn", "tt" }) list.Add((GemmSource, $"gemm_{size}_{t}"));
        foreach (int d in AttentionHeadDims) { list.Add((AttentionSource, $"attn_fwd_d{d}")); list.Add((AttentionSource, $"attn_bwd_d{d}")); }
        list.Add((AttentionSource, "attn_bwd_delta"));
        list.Add((RopeSource, "rope"));
        foreach (string k in new[] { "rmsnorm_fwd", "rmsnorm_bwd_dx", "rmsnorm_bwd_dw", "swiglu_fwd", "swiglu_bwd" }) list.Add((NormSource, k));
        foreach (string k in new[] { "embedding_fwd", "embedding_bwd", "cross_entropy_fwd", "cross_entropy_bwd", "cross_entropy_fused" }) list.Add((LossSource, k));
        list.Add((OptimizerSource, "adamw"));
        list.Add((OptimizerSource, "sum_squares"));
        foreach (string k in new[] { "ew_add", "ew_mul", "ew_scale", "ew_axpy" }) list.Add((ElementwiseSource, k));
        return list;
    }

    internal void ReleaseScratch()
    {
        lock (stagingLock)
        {
            if (staging != 0) acc.Free(staging);
            staging = 0;
            stagingBytes = 0;
        }
    }

    // ------------------------------------------------------------------------------------------ helpers

    /// <summary>The first tensor of an op: not null, not disposed, on this CUDA device.</summary>
    private Accelerator Device(string op, Tensor? t, string name)
    {
        if (t is null) throw new ArgumentNullException(name, $"{op}: {name} is null");
        if (!ReferenceEquals(t.Accelerator, acc))
            throw new ArgumentException($"{op}: {name} {t.ShapeString} lives on {t.Accelerator.Description}, not on this CUDA device ({acc.Info.Name})", name);
        t.Memory.ThrowIfDisposed();
        return acc;
    }

    private void Launch(string source, string kernel, LaunchShape shape, params ReadOnlySpan<KernelArg> args) =>
        acc.Launch(acc.Function(source, kernel), shape, args);

    /// <summary>
    /// Copy host data into the staging buffer (grown when needed) at 256-byte aligned offsets and return the device
    /// addresses. Stream order makes reuse safe: each copy is queued after the kernels that read the previous contents.
    /// </summary>
    private ulong Stage<T>(ReadOnlySpan<T> data, long offset = 0) where T : unmanaged
    {
        long bytes = (long)data.Length * sizeof(T);
        EnsureStaging(offset + bytes);
        fixed (T* p = data) acc.CopyToDevice(staging + (ulong)offset, p, bytes);
        return staging + (ulong)offset;
    }

    private void EnsureStaging(long bytes)
    {
        if (bytes <= stagingBytes) return;
        long size = Math.Max(1 << 16, (long)System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)bytes));
        if (staging != 0)
        {
            acc.Synchronize();
            acc.Free(staging);
        }
        staging = acc.Allocate(size, zero: false);
        stagingBytes = size;
    }

    internal static long Align(long bytes) => (bytes + 255) & ~255L;

    // ------------------------------------------------------------------------------------------ GEMM

    /// <summary>Which tile the GEMM uses for an m x n x batch product on a device with <paramref name="sms"/> SMs:
    /// the largest that M and N both fill and whose block count fills the device, else the smallest. 'l' 128x128, 'm' 64x64, 's' 32x32.</summary>
    public static char GemmTile(int m, int n, int batch, int sms)
    {
        bool Fits(int t) => Math.Min(m, n) >= t && LaunchMath.CeilDiv((long)m, t) * LaunchMath.CeilDiv((long)n, t) * batch >= sms;
        if (Fits(128)) return 'l';
        if (Fits(64)) return 'm';
        return 's';
    }

    internal static int TileSize(char tile) => tile switch { 'l' => 128, 'm' => 64, _ => 32 };

    /// <summary>
    /// C[i] = alpha op(A[i]) op(B[i]) + beta C[i] for i &lt; batch, operands at device addresses advancing by the given
    /// element strides. A C stride of 0 with batch &gt; 1 sums every product into the one C (the gradient of a broadcast operand).
    /// </summary>
    internal void Gemm(nint a, int lda, long strideA, bool transA, nint b, int ldb, long strideB, bool transB,
        nint c, int ldc, long strideC, int m, int n, int k, int batch, float alpha, float beta)
    {
        if (m == 0 || n == 0 || batch == 0) return;
        if (strideC == 0 && batch > 1)
        {
            for (int i = 0; i < batch; i++)
                Gemm(a + (nint)(4 * i * strideA), lda, 0, transA, b + (nint)(4 * i * strideB), ldb, 0, transB, c, ldc, 0, m, n, k, 1, alpha, i == 0 ? beta : 1f);
            return;
        }
        char tile = GemmTile(m, n, batch, acc.Info.Multiprocessors);
        int size = TileSize(tile);
        string kernel = $"gemm_{tile}_{(transA ? 't' : 'n')}{(transB ? 't' : 'n')}";
        for (int first = 0; first < batch; first += (int)LaunchShape.MaxGridYZ)
        {
            int count = Math.Min(batch - first, (int)LaunchShape.MaxGridYZ);
            var shape = LaunchShape.Grid(LaunchMath.CeilDiv(n, size), LaunchMath.CeilDiv(m, size), count, 256);
            Launch(GemmSource, kernel, shape,
                KernelArg.Pointer(a + (nint)(4L * first * strideA)), lda, KernelArg.Long(strideA),
                KernelArg.Pointer(b + (nint)(4L * first * strideB)), ldb, KernelArg.Long(strideB),
                KernelArg.Pointer(c + (nint)(4L * first * strideC)), ldc, KernelArg.Long(strideC),
                m, n, k, alpha, beta);
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
        Run(s, a!, transA, s.StrideA, b, transB, s.StrideB, c, s.StrideC, s.M, s.N, s.K, alpha, beta);
    }

    private void Run(CpuKernels.MatMulShape s, Tensor x, bool transX, int strideX, Tensor y, bool transY, int strideY,
        Tensor output, int strideOut, int m, int n, int k, float alpha, float beta)
    {
        if (s.Batch == 0) return;
        Gemm(x.Address, x.Dim(-1), strideX, transX, y.Address, y.Dim(-1), strideY, transY, output.Address, output.Dim(-1), strideOut,
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
        Gemm(a.Address + 4 * la.Offset, la.LeadingDim, la.BatchStride, transA, b.Address + 4 * lb.Offset, lb.LeadingDim, lb.BatchStride, transB,
            c.Address + 4 * lc.Offset, lc.LeadingDim, batch == 1 ? 1 : lc.BatchStride, m, n, k, batch, alpha, beta);
    }

    public void MatMulBackward(Tensor a, Tensor b, Tensor dc, Tensor? da, Tensor? db, bool transA = false, bool transB = false)
    {
        const string op = "MatMulBackward";
        if (a is not null) Device(op, a, "a");
        var s = CpuKernels.MatMulShape.Of(op, a!, b, dc, "dc", transA, transB, host: false);
        Guard.Gradient(op, acc, da, "da", a!, "a");
        Guard.Gradient(op, acc, db, "db", b, "b");
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

    /// <summary>Rank-2 contiguous product on tensors already checked (LoRA).</summary>
    private void Gemm2(Tensor a, bool transA, Tensor b, bool transB, Tensor c, float alpha, float beta)
    {
        int m = c.Dim(0), n = c.Dim(1), k = transA ? a.Dim(0) : a.Dim(1);
        Gemm(a.Address, a.Dim(1), 0, transA, b.Address, b.Dim(1), 0, transB, c.Address, c.Dim(1), 0, m, n, k, 1, alpha, beta);
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
        Tensor x2 = s.Flat(x!, s.In), y2 = s.Flat(y, s.Out), xa2 = s.Flat(xa, s.Rank);
        Gemm2(x2, false, loraA, true, xa2, 1f, 0f);
        Gemm2(x2, false, w, true, y2, 1f, 0f);
        Gemm2(xa2, false, loraB, true, y2, scale, 1f);
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
        if (dB is not null) Gemm2(dy2, true, xa2, false, dB, scale, 1f);
        if (dx is null && dA is null) return;
        using var dxa = acc.Scratch.Rent(s.Rows, s.Rank);
        Gemm2(dy2, false, loraB, false, dxa, scale, 0f);
        if (dA is not null) Gemm2(dxa, true, x2, false, dA, 1f, 1f);
        if (dx is not null)
        {
            var dx2 = s.Flat(dx, s.In);
            Gemm2(dy2, false, w, false, dx2, 1f, 1f);
            Gemm2(dxa, false, loraA, false, dx2, 1f, 1f);
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
        OpsCheck.Disjoint(op, dy!, "dy", dx, "dx");
        RunRope(shape, dy!, dx, positions, table, backward: true);
    }

    private void RunRope(CpuKernels.RopeShape s, Tensor src, Tensor dst, ReadOnlySpan<int> positions, RopeTable table, bool backward)
    {
        int half = s.HeadDim / 2;
        if (positions.Length == 0 || s.Heads == 0 || half == 0) return;
        lock (stagingLock)
        {
            long freqOffset = Align(4L * positions.Length);
            ulong pos = Stage(positions);
            ulong freq = Stage(table.InverseFrequency, freqOffset);
            Launch(RopeSource, "rope", LaunchShape.Linear((long)positions.Length * half),
                src, dst, KernelArg.Pointer(pos), KernelArg.Pointer(freq), KernelArg.Double(table.AttentionFactor),
                positions.Length, s.Tokens, s.Heads, s.HeadDim, s.SharedPositions ? s.Batch : 1,
                table.Layout == RopeLayout.Interleaved ? 1 : 0, backward ? 1 : 0);
        }
    }
}
