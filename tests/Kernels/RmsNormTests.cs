using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class RmsNormTests
{
    private const float Eps = 1e-5f;
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    public static TheoryData<int, int, int> Cases()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int w in new[] { 128, 256, 512 })
            foreach (var (rows, d) in new[] { (1, 1), (1, 7), (3, 17), (5, 33), (2, 1000) })
                data.Add(w, rows, d);
        data.Add(256, 67, 1024); // parallel path (rows x d >= 65536)
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void ForwardAndBackwardMatchReference(int width, int rows, int d)
    {
        using var simd = Width(width);
        var rng = new Rng(rows * 31 + d + width);
        float[] x = rng.Uniform(rows * d), w = rng.Uniform(d, 0.5f, 1.5f), g = rng.Uniform(rows * d);
        using var tx = Tensor(acc, x, "x", rows, d);
        using var tw = Tensor(acc, w, "weight", d);
        using var ty = acc.Allocate([rows, d], "y");
        using var tr = acc.Allocate([rows], "rstd");
        K.RmsNorm(tx, tw, ty, tr, Eps);
        var expected = RmsNormReference.Forward(D(x), D(w), Eps, out var rstd);
        Check.Close(expected, ty.ToArray(), 1e-5, 1e-5, "y");
        Check.Close(rstd, tr.ToArray(), 1e-6, 1e-5, "rstd");

        // Backward against the exact gradient of L = sum(y * g), taken by finite differences on small
        // shapes and checked against the double analytic form below on the large one.
        using var tg = Tensor(acc, g, "dy", rows, d);
        using var dx = acc.Allocate([rows, d], "dx");
        using var dw = acc.Allocate([d], "dWeight");
        K.RmsNormBackward(tx, tw, tr, tg, dx, dw);
        var (ex, ew) = AnalyticGradients(D(x), D(w), g);
        if (d == 1) Check.Close(ex, dx.ToArray(), 1e-5, 1e-4, "dx (d = 1: x / |x| is flat, dx is ~0)");
        else Check.RelativeNorm(ex, dx.ToArray(), 1e-4, "dx");
        Check.RelativeNorm(ew, dw.ToArray(), 1e-4, "dWeight");
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void GradientsMatchFiniteDifferences(int width)
    {
        using var simd = Width(width);
        const int rows = 3, d = 19;
        var rng = new Rng(5);
        float[] x = rng.Uniform(rows * d), w = rng.Uniform(d, 0.5f, 1.5f), g = rng.Uniform(rows * d);
        double Loss(double[] xs, double[] ws) => FiniteDifference.Dot(RmsNormReference.Forward(xs, ws, Eps, out _), g);
        double[] wd = D(w), xd = D(x);
        var numX = FiniteDifference.Gradient(v => Loss(v, wd), D(x));
        var numW = FiniteDifference.Gradient(v => Loss(xd, v), D(w));

        using var tx = Tensor(acc, x, "x", rows, d);
        using var tw = Tensor(acc, w, "weight", d);
        using var ty = acc.Allocate([rows, d], "y");
        using var tr = acc.Allocate([rows], "rstd");
        using var tg = Tensor(acc, g, "dy", rows, d);
        using var dx = acc.Allocate([rows, d], "dx");
        using var dw = acc.Allocate([d], "dWeight");
        K.RmsNorm(tx, tw, ty, tr, Eps);
        K.RmsNormBackward(tx, tw, tr, tg, dx, dw);
        Check.RelativeNorm(numX, dx.ToArray(), 1e-4, "dx vs finite differences");
        Check.RelativeNorm(numW, dw.ToArray(), 1e-4, "dWeight vs finite differences");
    }

    [Theory]
    [InlineData(4, 9)]
    [InlineData(67, 1024)] // parallel path with per-thread dWeight partials
    public void BackwardAccumulatesAndSkipsNullGradients(int rows, int d)
    {
        var rng = new Rng(rows + d);
        float[] x = rng.Uniform(rows * d), w = rng.Uniform(d), g = rng.Uniform(rows * d);
        using var tx = Tensor(acc, x, "x", rows, d);
        using var tw = Tensor(acc, w, "weight", d);
        using var ty = acc.Allocate([rows, d], "y");
        using var tr = acc.Allocate([rows], "rstd");
        using var tg = Tensor(acc, g, "dy", rows, d);
        using var dx = acc.Allocate([rows, d], "dx");
        using var dw = acc.Allocate([d], "dWeight");
        K.RmsNorm(tx, tw, ty, tr, Eps);
        K.RmsNormBackward(tx, tw, tr, tg, dx, dw);
        float[] once = dx.ToArray(), onceW = dw.ToArray();
        K.RmsNormBackward(tx, tw, tr, tg, dx, null);
        K.RmsNormBackward(tx, tw, tr, tg, null, dw);
        Check.Close(Times(once, 2), dx.ToArray(), 1e-6, 1e-5, "dx twice");
        Check.Close(Times(onceW, 2), dw.ToArray(), 1e-5, 1e-5, "dWeight twice");
    }

    [Fact]
    public void InPlaceAndBatchedShapesWork()
    {
        var rng = new Rng(8);
        float[] x = rng.Uniform(2 * 3 * 10), w = rng.Uniform(10);
        using var tx = Tensor(acc, x, "x", 2, 3, 10);
        using var tw = Tensor(acc, w, "weight", 10);
        using var tr = acc.Allocate([6], "rstd");
        K.RmsNorm(tx, tw, tx, tr, Eps);
        Check.Close(RmsNormReference.Forward(D(x), D(w), Eps, out _), tx.ToArray(), 1e-5, 1e-5, "in-place y");
    }

    [Fact]
    public void BadShapesThrow()
    {
        using var x = acc.Allocate([4, 8], "x");
        using var w = acc.Allocate([8], "weight");
        using var w7 = acc.Allocate([7], "weight");
        using var y = acc.Allocate([4, 8], "y");
        using var r = acc.Allocate([4], "rstd");
        using var r3 = acc.Allocate([3], "rstd");
        using var dyBad = acc.Allocate([4, 9], "dy");
        Assert.Contains("x has shape [4, 8]", Assert.Throws<ArgumentException>(() => K.RmsNorm(x, w7, y, r, Eps)).Message);
        Assert.Contains("rstd has shape [3]", Assert.Throws<ArgumentException>(() => K.RmsNorm(x, w, y, r3, Eps)).Message);
        Assert.Contains("RmsNormBackward: dy", Assert.Throws<ArgumentException>(() => K.RmsNormBackward(x, w, r, dyBad, y, null)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => K.RmsNorm(x, w, y, r, -1f));
        Assert.Throws<ArgumentNullException>(() => K.RmsNorm(x, null!, y, r, Eps));
    }

    /// <summary>Closed-form gradients in double, derived independently of the kernel's arrangement.</summary>
    private static (double[] dx, double[] dw) AnalyticGradients(double[] x, double[] w, float[] g)
    {
        int d = w.Length, rows = x.Length / d;
        var dx = new double[x.Length];
        var dw = new double[d];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0, dot = 0;
            for (int i = 0; i < d; i++) ss += x[r * d + i] * x[r * d + i];
            double ms = ss / d + Eps, rstd = 1 / Math.Sqrt(ms);
            for (int i = 0; i < d; i++) dot += g[r * d + i] * w[i] * x[r * d + i];
            for (int i = 0; i < d; i++)
            {
                dx[r * d + i] = g[r * d + i] * w[i] * rstd - x[r * d + i] * dot * Math.Pow(ms, -1.5) / d;
                dw[i] += g[r * d + i] * x[r * d + i] * rstd;
            }
        }
        return (dx, dw);
    }
}
