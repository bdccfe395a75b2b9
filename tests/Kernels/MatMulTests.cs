using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;
using UioLlm.Kernels.Cpu.Gemm;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Kernels;

public class MatMulTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    private const double Atol = 1e-4, Rtol = 1e-4;

    /// <summary>m, n, k: odd sizes, non-multiples of 8/16, decode rows, and sizes crossing the KC/MC blocks.</summary>
    public static TheoryData<int, int, int> Shapes() => new()
    {
        { 1, 1, 1 }, { 7, 13, 5 }, { 33, 17, 65 }, { 1, 64, 300 }, { 1, 37, 9 }, { 3, 40, 37 }, { 8, 33, 70 },
        { 9, 31, 17 }, { 6, 16, 8 }, { 130, 300, 70 }, { 200, 70, 520 }, { 13, 2, 300 },
        { 9, 4100, 3 }, { 3100, 20, 5 }, // more than one NC column block; more than one packed-row block
        // Single-token products: 8-row and 4-row short-row paths with k tails, single-row streaming past 256 KiB.
        { 1, 172, 64 }, { 1, 21, 67 }, { 1, 9, 8 }, { 1, 512, 125 }, { 1, 300, 230 }, { 1, 33, 2000 },
    };

    public static TheoryData<int, int, int, bool, bool> ShapesAndTransposes()
    {
        var data = new TheoryData<int, int, int, bool, bool>();
        foreach (var row in Shapes())
        {
            var (m, n, k) = ((int)row[0], (int)row[1], (int)row[2]);
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    data.Add(m, n, k, ta, tb);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(ShapesAndTransposes))]
    public void MatchesReference(int m, int n, int k, bool transA, bool transB)
    {
        var rng = new Rng(m * 1000 + n * 10 + k + (transA ? 7 : 0) + (transB ? 13 : 0));
        CheckProduct(K, rng, m, n, k, transA, transB);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ThreadCountsAgree(int threads)
    {
        var kernels = new CpuKernels(threads);
        var rng = new Rng(41 + threads);
        CheckProduct(kernels, rng, 150, 90, 300, false, true);
        CheckProduct(kernels, rng, 5, 301, 513, true, false);
    }

    /// <summary>The AVX-512 micro-kernel (12x32) runs emulated where the hardware lacks it; it must agree too.</summary>
    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(13, 33, 7)]
    [InlineData(30, 70, 50)]
    [InlineData(25, 65, 400)]
    [InlineData(100, 90, 300)] // large enough to be split over the two threads
    public void Vector512PathMatchesReference(int m, int n, int k)
    {
        var kernels = new CpuKernels(2) { GemmWidth = GemmWidth.Vector512 };
        var rng = new Rng(m + n + k);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                CheckProduct(kernels, rng, m, n, k, ta, tb, alpha: 0.5f, beta: 2f);
    }

    /// <summary>Several threads multiplying at once: one gets the GEMM worker pool, the others run inline.</summary>
    [Fact]
    public void ConcurrentCallersAgree()
    {
        var kernels = new CpuKernels(2);
        System.Threading.Tasks.Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            var rng = new Rng(900 + i);
            for (int rep = 0; rep < 3; rep++)
            {
                CheckProduct(kernels, rng, 120, 130, 140, i % 2 == 1, i >= 2);
                CheckProduct(kernels, rng, 3, 700, 600, i % 2 == 0, i < 2);
            }
        });
    }

    [Fact]
    public void Vector256PathCanBeForced()
    {
        var kernels = new CpuKernels(2) { GemmWidth = GemmWidth.Vector256 };
        CheckProduct(kernels, new Rng(5), 19, 35, 27, true, true, alpha: -1f, beta: 0.25f);
    }

    [Theory]
    [InlineData(2f, 0f)]
    [InlineData(1f, 1f)]
    [InlineData(-0.5f, 0.75f)]
    public void AlphaAndBetaScale(float alpha, float beta)
    {
        foreach (var (m, n, k) in new[] { (5, 9, 11), (40, 50, 300), (2, 20, 9), (1, 21, 67), (1, 300, 230), (1, 40, 500) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    CheckProduct(K, new Rng(m + 3 * k), m, n, k, ta, tb, alpha, beta);
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 19, 13)]
    [InlineData(64, 48, 96)]
    [InlineData(3, 33, 0)]
    public void BetaZeroIgnoresNaNInC(int m, int n, int k)
    {
        var rng = new Rng(3);
        using var a = rng.Tensor(acc, "a", m, k);
        using var b = rng.Tensor(acc, "b", k, n);
        using var c = acc.Allocate([m, n], "c");
        c.Span.Fill(float.NaN);
        K.MatMul(a, b, c, alpha: 1f, beta: 0f);
        var expected = MatMulReference.Gemm(Check.ToDouble(a.Span), Check.ToDouble(b.Span), m, n, k);
        Check.Close(expected, c.Span, Atol, Rtol, "c");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void BatchedAndBroadcastOperands(bool transA, bool transB)
    {
        const int batch = 3, m = 9, n = 21, k = 17;
        var rng = new Rng(11);
        int[] shapeA = transA ? [k, m] : [m, k], shapeB = transB ? [n, k] : [k, n];
        foreach (var (batchedA, batchedB) in new[] { (true, true), (false, true), (true, false) })
        {
            using var a = rng.Tensor(acc, "a", batchedA ? [batch, .. shapeA] : shapeA);
            using var b = rng.Tensor(acc, "b", batchedB ? [batch, .. shapeB] : shapeB);
            using var c = acc.Allocate([batch, m, n], "c");
            K.MatMul(a, b, c, transA, transB);
            var expected = MatMulReference.Batched(Check.ToDouble(a.Span), !batchedA, Check.ToDouble(b.Span), !batchedB, batch, m, n, k, transA, transB);
            Check.Close(expected, c.Span, Atol, Rtol, $"c (batched a {batchedA}, batched b {batchedB})");
        }
    }

    [Fact]
    public void BatchedManySmallProductsRunInParallel()
    {
        const int batch = 24, m = 16, n = 16, k = 32;
        var rng = new Rng(12);
        using var a = rng.Tensor(acc, "a", batch, m, k);
        using var b = rng.Tensor(acc, "b", batch, n, k);
        using var c = acc.Allocate([batch, m, n], "c");
        K.MatMul(a, b, c, transB: true);
        var expected = MatMulReference.Batched(Check.ToDouble(a.Span), false, Check.ToDouble(b.Span), false, batch, m, n, k, transB: true);
        Check.Close(expected, c.Span, Atol, Rtol, "c");
    }

    /// <summary>Per-head products inside [T, H*D] rows (interleaved batches), with offsets and padding.</summary>
    [Fact]
    public void StridedLayoutsAddressHeadsInsideRows()
    {
        const int t = 11, h = 3, d = 10, pad = 5;
        var rng = new Rng(13);
        // q [T, H*D + pad], k [T, H*D]: scores[h] = q_h k_h^T, written into c [H, T, T + 2] at column offset 1.
        using var q = rng.Tensor(acc, "q", t, h * d + pad);
        using var kk = rng.Tensor(acc, "k", t, h * d);
        using var c = acc.Allocate([h, t, t + 2], "c");
        c.Span.Fill(float.NaN);
        K.MatMulStrided(q, new MatrixLayout(pad, h * d + pad, d), false, kk, new MatrixLayout(0, h * d, d), true,
            c, new MatrixLayout(1, t + 2, t * (t + 2)), t, t, d, batch: h);
        var qs = q.ToArray();
        var ks = kk.ToArray();
        var cs = c.ToArray();
        for (int head = 0; head < h; head++)
            for (int i = 0; i < t; i++)
                for (int j = 0; j < t; j++)
                {
                    double s = 0;
                    for (int p = 0; p < d; p++) s += qs[i * (h * d + pad) + pad + head * d + p] * ks[j * h * d + head * d + p];
                    float got = cs[head * t * (t + 2) + i * (t + 2) + 1 + j];
                    Assert.True(Math.Abs(got - s) <= 1e-4 + 1e-4 * Math.Abs(s), $"head {head} ({i},{j}): {got} vs {s}");
                }
        // Columns outside the addressed window are untouched.
        Assert.True(float.IsNaN(cs[0]) && float.IsNaN(cs[t + 1]));
    }

    [Fact]
    public void StridedBroadcastOperandWithBeta()
    {
        const int batch = 4, m = 6, n = 20, k = 12;
        var rng = new Rng(14);
        using var a = rng.Tensor(acc, "a", m, k);           // shared by every batch entry (stride 0)
        using var b = rng.Tensor(acc, "b", batch, k, n);
        using var c = rng.Tensor(acc, "c", batch, m, n);
        var c0 = Check.ToDouble(c.Span);
        K.MatMulStrided(a, new MatrixLayout(0, k), false, b, new MatrixLayout(0, n, k * n), false,
            c, new MatrixLayout(0, n, m * n), m, n, k, batch, alpha: 2f, beta: -1f);
        var bs = Check.ToDouble(b.Span);
        for (int e = 0; e < batch; e++)
        {
            var expected = MatMulReference.Gemm(Check.ToDouble(a.Span), bs[(e * k * n)..((e + 1) * k * n)], m, n, k,
                alpha: 2, beta: -1, c0: c0[(e * m * n)..((e + 1) * m * n)]);
            Check.Close(expected, c.Span.Slice(e * m * n, m * n), Atol, Rtol, $"c batch {e}");
        }
    }

    // ---------------------------------------------------------------- backward

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void BackwardMatchesFiniteDifferences(bool transA, bool transB)
    {
        const int m = 5, n = 7, k = 6;
        var rng = new Rng(21 + (transA ? 1 : 0) + (transB ? 2 : 0));
        int[] shapeA = transA ? [k, m] : [m, k], shapeB = transB ? [n, k] : [k, n];
        using var a = rng.Tensor(acc, "a", shapeA);
        using var b = rng.Tensor(acc, "b", shapeB);
        using var dc = rng.Tensor(acc, "dc", m, n);
        using var da = acc.Allocate(shapeA, "da");
        using var db = acc.Allocate(shapeB, "db");
        K.MatMulBackward(a, b, dc, da, db, transA, transB);

        var ad = Check.ToDouble(a.Span);
        var bd = Check.ToDouble(b.Span);
        var g = dc.ToArray();
        var numA = FiniteDifference.Gradient(x => FiniteDifference.Dot(MatMulReference.Gemm(x, bd, m, n, k, transA, transB), g), ad);
        var numB = FiniteDifference.Gradient(x => FiniteDifference.Dot(MatMulReference.Gemm(ad, x, m, n, k, transA, transB), g), bd);
        Check.RelativeNorm(numA, da.Span, 1e-4, "da");
        Check.RelativeNorm(numB, db.Span, 1e-4, "db");
    }

    /// <summary>A broadcast operand's gradient sums over the batch; a batched one gets per-entry gradients.</summary>
    [Theory]
    [InlineData(false, true, false, false)]
    [InlineData(true, false, false, true)]
    [InlineData(false, true, true, true)]
    [InlineData(true, true, true, false)]
    public void BatchedBackwardMatchesFiniteDifferences(bool batchedA, bool batchedB, bool transA, bool transB)
    {
        const int batch = 3, m = 4, n = 5, k = 3;
        var rng = new Rng(31);
        int[] shapeA = transA ? [k, m] : [m, k], shapeB = transB ? [n, k] : [k, n];
        using var a = rng.Tensor(acc, "a", batchedA ? [batch, .. shapeA] : shapeA);
        using var b = rng.Tensor(acc, "b", batchedB ? [batch, .. shapeB] : shapeB);
        using var dc = rng.Tensor(acc, "dc", batch, m, n);
        using var da = acc.Allocate(a.Shape, "da");
        using var db = acc.Allocate(b.Shape, "db");
        K.MatMulBackward(a, b, dc, da, db, transA, transB);

        var ad = Check.ToDouble(a.Span);
        var bd = Check.ToDouble(b.Span);
        var g = dc.ToArray();
        double[] F(double[] x, double[] y) => MatMulReference.Batched(x, !batchedA, y, !batchedB, batch, m, n, k, transA, transB);
        Check.RelativeNorm(FiniteDifference.Gradient(x => FiniteDifference.Dot(F(x, bd), g), ad), da.Span, 1e-4, "da");
        Check.RelativeNorm(FiniteDifference.Gradient(y => FiniteDifference.Dot(F(ad, y), g), bd), db.Span, 1e-4, "db");
    }

    [Fact]
    public void BackwardAccumulatesAndSkipsNullGradients()
    {
        const int m = 40, n = 33, k = 70;
        var rng = new Rng(41);
        using var a = rng.Tensor(acc, "a", m, k);
        using var b = rng.Tensor(acc, "b", n, k);
        using var dc = rng.Tensor(acc, "dc", m, n);
        using var da = acc.Allocate([m, k], "da");
        using var db = acc.Allocate([n, k], "db");
        K.MatMulBackward(a, b, dc, da, null, transB: true);
        Assert.All(db.ToArray(), v => Assert.Equal(0f, v));
        var once = da.ToArray();
        K.MatMulBackward(a, b, dc, da, db, transB: true);
        var dbOnce = db.ToArray();
        K.MatMulBackward(a, b, dc, null, db, transB: true);
        var twice = new double[once.Length];
        for (int i = 0; i < once.Length; i++) twice[i] = 2.0 * once[i];
        Check.Close(twice, da.Span, 1e-5, 1e-5, "da after two backward calls");
        var dbTwice = new double[dbOnce.Length];
        for (int i = 0; i < dbOnce.Length; i++) dbTwice[i] = 2.0 * dbOnce[i];
        Check.Close(dbTwice, db.Span, 1e-5, 1e-5, "db after two backward calls");
    }

    // ---------------------------------------------------------------- argument checks

    [Fact]
    public void BadShapesThrowNamingTheTensor()
    {
        using var a = acc.Allocate([4, 5], "a");
        using var b = acc.Allocate([6, 3], "b");
        using var b3 = acc.Allocate([2, 5, 3], "b3");
        using var a3 = acc.Allocate([3, 4, 5], "a3");
        using var c = acc.Allocate([4, 3], "c");
        using var good = acc.Allocate([5, 3], "good");
        using var r1 = acc.Allocate([5], "r1");
        AssertNames("b", () => K.MatMul(a, b, c));
        AssertNames("c", () => K.MatMul(a, good, acc.Allocate([4, 4])));
        AssertNames("c", () => K.MatMul(a, b3, c)); // batched product needs a rank-3 c
        AssertNames("b", () => K.MatMul(a3, b3, acc.Allocate([3, 4, 3])));
        AssertNames("a", () => K.MatMul(r1, good, c));
        AssertNames("da", () => K.MatMulBackward(a, good, c, acc.Allocate([5, 4]), null));
        AssertNames("db", () => K.MatMulBackward(a, good, c, null, acc.Allocate([3, 5])));
        AssertNames("dc", () => K.MatMulBackward(a, good, acc.Allocate([4, 2]), null, null));
        Assert.Throws<ArgumentOutOfRangeException>(() => K.MatMul(a, good, c, alpha: float.NaN));
        Assert.Throws<ArgumentNullException>(() => K.MatMul(a, null!, c));
        using var other = new CpuAccelerator(1);
        using var foreign = other.Allocate([5, 3], "foreign");
        AssertNames("b", () => K.MatMul(a, foreign, c));
    }

    [Fact]
    public void BadStridedLayoutsThrowNamingTheTensor()
    {
        using var a = acc.Allocate([4, 5], "a");
        using var b = acc.Allocate([5, 3], "b");
        using var c = acc.Allocate([4, 3], "c");
        var la = new MatrixLayout(0, 5);
        var lb = new MatrixLayout(0, 3);
        var lc = new MatrixLayout(0, 3);
        K.MatMulStrided(a, la, false, b, lb, false, c, lc, 4, 3, 5); // the valid baseline
        AssertNames("a", () => K.MatMulStrided(a, la with { Offset = 1 }, false, b, lb, false, c, lc, 4, 3, 5));
        AssertNames("a", () => K.MatMulStrided(a, la with { LeadingDim = 4 }, false, b, lb, false, c, lc, 4, 3, 5));
        AssertNames("b", () => K.MatMulStrided(a, la, false, b, lb, true, c, lc, 4, 3, 5)); // [3,5] transposed needs ld 5
        AssertNames("b", () => K.MatMulStrided(a, la, false, b, lb with { BatchStride = 3 }, false, c, lc with { BatchStride = 12 }, 4, 3, 5, batch: 2));
        AssertNames("c", () => K.MatMulStrided(a, la, false, b, lb, false, c, lc with { Offset = -1 }, 4, 3, 5));
        AssertNames("c", () => K.MatMulStrided(a, la, false, b, lb, false, c, lc with { Offset = 1 }, 4, 3, 5));
        using var c2 = acc.Allocate([4, 6], "c2");
        // Two outputs 1 column apart in the same rows would overlap; 3 columns apart they interleave cleanly.
        AssertNames("c", () => K.MatMulStrided(a, la, false, b, lb, false, c2, new MatrixLayout(0, 6, 1), 4, 3, 5, batch: 2));
        K.MatMulStrided(a, la, false, b, lb, false, c2, new MatrixLayout(0, 6, 3), 4, 3, 5, batch: 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => K.MatMulStrided(a, la, false, b, lb, false, c, lc, -1, 3, 5));
    }

    private static void AssertNames(string name, Action call)
    {
        var e = Assert.ThrowsAny<ArgumentException>(call);
        Assert.Equal(name, e.ParamName);
        Assert.Contains(name, e.Message);
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>Run c = alpha op(a) op(b) + beta c on <paramref name="kernels"/> and compare with the reference.</summary>
    private void CheckProduct(IKernels kernels, Rng rng, int m, int n, int k, bool transA, bool transB, float alpha = 1f, float beta = 0f)
    {
        using var a = rng.Tensor(acc, "a", transA ? [k, m] : [m, k]);
        using var b = rng.Tensor(acc, "b", transB ? [n, k] : [k, n]);
        using var c = rng.Tensor(acc, "c", m, n);
        var c0 = Check.ToDouble(c.Span);
        kernels.MatMul(a, b, c, transA, transB, alpha, beta);
        var expected = MatMulReference.Gemm(Check.ToDouble(a.Span), Check.ToDouble(b.Span), m, n, k, transA, transB, alpha, beta, c0);
        double tol = Atol * Math.Max(1, Math.Sqrt(k) / 4);
        Check.Close(expected, c.Span, tol, Rtol, $"c ({m}x{n}x{k}, transA {transA}, transB {transB}, alpha {alpha}, beta {beta})");
    }
}
