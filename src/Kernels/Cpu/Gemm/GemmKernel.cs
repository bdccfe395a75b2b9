using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>Which SIMD width the GEMM uses; <see cref="Auto"/> picks the widest the hardware accelerates.</summary>
internal enum GemmWidth
{
    Auto,
    Vector256,
    Vector512,
}

/// <summary>
/// A micro-kernel with the cache blocking that suits it. MR x NR is the register tile; KC x NR of packed B
/// (one micro-panel) stays in L1, MC x KC of packed A in L2, KC x NC of packed B in L3.
/// </summary>
internal sealed unsafe class GemmKernel
{
    private GemmKernel(string name, int mr, int nr, int kc, int mc, int nc,
        delegate*<int, float*, float*, float*, nint, float, float, void> run)
    {
        Name = name;
        MR = mr;
        NR = nr;
        KC = kc;
        MC = mc;
        NC = nc;
        Run = run;
    }

    /// <summary>6x16 tile; KC 256 keeps a 16 KB B micro-panel in a 32 KB L1, MC 144 a 144 KB A block in L2.</summary>
    public static readonly GemmKernel Avx2 = new("6x16 Vector256", 6, 16, kc: 256, mc: 144, nc: 4096, &MicroKernels.Kernel6x16);

    /// <summary>12x32 tile; KC 384 keeps a 48 KB B micro-panel in a 48 KB L1, MC 192 a 288 KB A block in a 1-2 MB L2.</summary>
    public static readonly GemmKernel Avx512 = new("12x32 Vector512", 12, 32, kc: 384, mc: 192, nc: 4096, &MicroKernels.Kernel12x32);

    public static GemmKernel Select(GemmWidth width) => width switch
    {
        GemmWidth.Vector256 => Avx2,
        GemmWidth.Vector512 => Avx512,
        _ => Vector512.IsHardwareAccelerated ? Avx512 : Avx2,
    };

    public string Name { get; }

    public int MR { get; }

    public int NR { get; }

    public int KC { get; }

    public int MC { get; }

    public int NC { get; }

    /// <summary>(kc, packed A panel, packed B panel, C, ldc, alpha, beta): one full MR x NR tile of C.</summary>
    public delegate*<int, float*, float*, float*, nint, float, float, void> Run { get; }
}

/// <summary>
/// One C = alpha op(A) op(B) + beta C on raw row-major storage with leading dimensions. When B is a whole
/// frozen matrix, <see cref="FrozenB"/> names it so the driver can use (and on first use build) its pre-packed
/// panels; <see cref="Packed"/> is then set and <see cref="PackedColumn"/> says which column of the packed
/// matrix is column 0 of this problem.
/// </summary>
internal readonly unsafe struct GemmProblem(
    float* a, nint lda, bool transA, float* b, nint ldb, bool transB, float* c, nint ldc,
    int m, int n, int k, float alpha, float beta, Tensor? frozenB = null, PackedPanels? packed = null, int packedColumn = 0)
{
    public readonly Tensor? FrozenB = frozenB;
    public readonly PackedPanels? Packed = packed;
    public readonly int PackedColumn = packedColumn;

    public readonly float* A = a;
    public readonly nint Lda = lda;
    public readonly bool TransA = transA;
    public readonly float* B = b;
    public readonly nint Ldb = ldb;
    public readonly bool TransB = transB;
    public readonly float* C = c;
    public readonly nint Ldc = ldc;
    public readonly int M = m;
    public readonly int N = n;
    public readonly int K = k;
    public readonly float Alpha = alpha;
    public readonly float Beta = beta;

    public GemmProblem WithBeta(float beta) => new(A, Lda, TransA, B, Ldb, TransB, C, Ldc, M, N, K, Alpha, beta, FrozenB, Packed, PackedColumn);

    /// <summary>The same product reading B from its pre-packed panels.</summary>
    public GemmProblem WithPacked(PackedPanels panels) => new(A, Lda, TransA, B, Ldb, TransB, C, Ldc, M, N, K, Alpha, Beta, FrozenB, panels, 0);

    /// <summary>Rows [i0, i0+m) of op(A) and C.</summary>
    public GemmProblem Rows(int i0, int m) =>
        new(TransA ? A + i0 : A + i0 * Lda, Lda, TransA, B, Ldb, TransB, C + i0 * Ldc, Ldc, m, N, K, Alpha, Beta, FrozenB, Packed, PackedColumn);

    /// <summary>Columns [j0, j0+n) of op(B) and C.</summary>
    public GemmProblem Columns(int j0, int n) =>
        new(A, Lda, TransA, TransB ? B + j0 * Ldb : B + j0, Ldb, TransB, C + j0, Ldc, M, n, K, Alpha, Beta, FrozenB, Packed, PackedColumn + j0);

    /// <summary>Another product of the same shape at other addresses (batched GEMM): no frozen B.</summary>
    public GemmProblem At(float* a, float* b, float* c) => new(a, Lda, TransA, b, Ldb, TransB, c, Ldc, M, N, K, Alpha, Beta);

    /// <summary>Multiply-add count, as a long (for the parallel threshold).</summary>
    public long Volume => (long)M * N * K;
}
