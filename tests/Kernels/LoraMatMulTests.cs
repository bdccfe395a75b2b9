using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Kernels;

public class LoraMatMulTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    [Theory]
    [InlineData(1, 7, 5, 3)]
    [InlineData(9, 33, 17, 4)]
    [InlineData(40, 70, 130, 16)]
    [InlineData(2, 300, 64, 8)]
    public void ForwardMatchesReference(int t, int inDim, int outDim, int rank)
    {
        var rng = new Rng(t + inDim + outDim + rank);
        const float scale = 0.75f;
        using var x = rng.Tensor(acc, "x", t, inDim);
        using var w = rng.Tensor(acc, "w", outDim, inDim);
        using var a = rng.Tensor(acc, "loraA", rank, inDim);
        using var b = rng.Tensor(acc, "loraB", outDim, rank);
        using var y = acc.Allocate([t, outDim], "y");
        using var xa = acc.Allocate([t, rank], "xa");
        y.Span.Fill(float.NaN); // forward overwrites
        K.LoraMatMul(x, w, a, b, scale, y, xa);
        var (ey, exa) = LoraReference.Forward(D(x), D(w), D(a), D(b), scale, t, inDim, outDim, rank);
        double tol = 1e-4 * Math.Max(1, Math.Sqrt(inDim) / 4);
        Check.Close(exa, xa.Span, tol, 1e-4, "xa");
        Check.Close(ey, y.Span, tol, 1e-4, "y");
    }

    [Fact]
    public void BatchedInputIsFlattened()
    {
        var rng = new Rng(2);
        using var x = rng.Tensor(acc, "x", 2, 3, 10);
        using var w = rng.Tensor(acc, "w", 6, 10);
        using var a = rng.Tensor(acc, "loraA", 2, 10);
        using var b = rng.Tensor(acc, "loraB", 6, 2);
        using var y = acc.Allocate([2, 3, 6], "y");
        using var xa = acc.Allocate([2, 3, 2], "xa");
        K.LoraMatMul(x, w, a, b, 2f, y, xa);
        var (ey, exa) = LoraReference.Forward(D(x), D(w), D(a), D(b), 2, 6, 10, 6, 2);
        Check.Close(ey, y.Span, 1e-4, 1e-4, "y");
        Check.Close(exa, xa.Span, 1e-4, 1e-4, "xa");
    }

    [Theory]
    [InlineData(1, 6, 5, 2)]
    [InlineData(4, 9, 7, 3)]
    public void BackwardMatchesFiniteDifferences(int t, int inDim, int outDim, int rank)
    {
        var rng = new Rng(10 + t);
        const float scale = 1.5f;
        using var x = rng.Tensor(acc, "x", t, inDim);
        using var w = rng.Tensor(acc, "w", outDim, inDim);
        using var a = rng.Tensor(acc, "loraA", rank, inDim);
        using var b = rng.Tensor(acc, "loraB", outDim, rank);
        using var y = acc.Allocate([t, outDim], "y");
        using var xa = acc.Allocate([t, rank], "xa");
        using var dy = rng.Tensor(acc, "dy", t, outDim);
        using var dx = acc.Allocate([t, inDim], "dx");
        using var dA = acc.Allocate([rank, inDim], "dA");
        using var dB = acc.Allocate([outDim, rank], "dB");
        K.LoraMatMul(x, w, a, b, scale, y, xa);
        K.LoraMatMulBackward(x, w, a, b, scale, xa, dy, dx, dA, dB);

        double[] xd = D(x), wd = D(w), ad = D(a), bd = D(b);
        var g = dy.ToArray();
        double L(double[] xx, double[] aa, double[] bb) =>
            FiniteDifference.Dot(LoraReference.Forward(xx, wd, aa, bb, scale, t, inDim, outDim, rank).Y, g);
        Check.RelativeNorm(FiniteDifference.Gradient(v => L(v, ad, bd), xd), dx.Span, 1e-4, "dx");
        Check.RelativeNorm(FiniteDifference.Gradient(v => L(xd, v, bd), ad), dA.Span, 1e-4, "dA");
        Check.RelativeNorm(FiniteDifference.Gradient(v => L(xd, ad, v), bd), dB.Span, 1e-4, "dB");
    }

    [Fact]
    public void BackwardAccumulatesAndSkipsNullGradients()
    {
        const int t = 5, inDim = 12, outDim = 10, rank = 4;
        var rng = new Rng(20);
        using var x = rng.Tensor(acc, "x", t, inDim);
        using var w = rng.Tensor(acc, "w", outDim, inDim);
        using var a = rng.Tensor(acc, "loraA", rank, inDim);
        using var b = rng.Tensor(acc, "loraB", outDim, rank);
        using var y = acc.Allocate([t, outDim], "y");
        using var xa = acc.Allocate([t, rank], "xa");
        using var dy = rng.Tensor(acc, "dy", t, outDim);
        using var dx = acc.Allocate([t, inDim], "dx");
        using var dA = acc.Allocate([rank, inDim], "dA");
        using var dB = acc.Allocate([outDim, rank], "dB");
        K.LoraMatMul(x, w, a, b, 0.5f, y, xa);
        K.LoraMatMulBackward(x, w, a, b, 0.5f, xa, dy, dx, dA, dB);
        float[] dx1 = dx.ToArray(), dA1 = dA.ToArray(), dB1 = dB.ToArray();
        K.LoraMatMulBackward(x, w, a, b, 0.5f, xa, dy, dx, null, null);
        K.LoraMatMulBackward(x, w, a, b, 0.5f, xa, dy, null, dA, null);
        K.LoraMatMulBackward(x, w, a, b, 0.5f, xa, dy, null, null, dB);
        Check.Close(Twice(dx1), dx.Span, 1e-5, 1e-5, "dx after two calls");
        Check.Close(Twice(dA1), dA.Span, 1e-5, 1e-5, "dA after two calls");
        Check.Close(Twice(dB1), dB.Span, 1e-5, 1e-5, "dB after two calls");
    }

    [Fact]
    public void BadShapesThrowNamingTheTensor()
    {
        using var x = acc.Allocate([3, 8], "x");
        using var w = acc.Allocate([5, 8], "w");
        using var a = acc.Allocate([2, 8], "loraA");
        using var b = acc.Allocate([5, 2], "loraB");
        using var y = acc.Allocate([3, 5], "y");
        using var xa = acc.Allocate([3, 2], "xa");
        K.LoraMatMul(x, w, a, b, 1f, y, xa);
        AssertNames("w", () => K.LoraMatMul(x, acc.Allocate([5, 7]), a, b, 1f, y, xa));
        AssertNames("loraA", () => K.LoraMatMul(x, w, acc.Allocate([2, 7]), b, 1f, y, xa));
        AssertNames("loraB", () => K.LoraMatMul(x, w, a, acc.Allocate([5, 3]), 1f, y, xa));
        AssertNames("y", () => K.LoraMatMul(x, w, a, b, 1f, acc.Allocate([3, 4]), xa));
        AssertNames("xa", () => K.LoraMatMul(x, w, a, b, 1f, y, acc.Allocate([3, 3])));
        AssertNames("dy", () => K.LoraMatMulBackward(x, w, a, b, 1f, xa, acc.Allocate([3, 6]), null, null, null));
        AssertNames("dx", () => K.LoraMatMulBackward(x, w, a, b, 1f, xa, y, acc.Allocate([3, 7]), null, null));
        AssertNames("dA", () => K.LoraMatMulBackward(x, w, a, b, 1f, xa, y, null, acc.Allocate([8, 2]), null));
        AssertNames("dB", () => K.LoraMatMulBackward(x, w, a, b, 1f, xa, y, null, null, acc.Allocate([2, 5])));
        Assert.Throws<ArgumentOutOfRangeException>(() => K.LoraMatMul(x, w, a, b, float.PositiveInfinity, y, xa));
    }

    private static void AssertNames(string name, Action call)
    {
        var e = Assert.ThrowsAny<ArgumentException>(call);
        Assert.Equal(name, e.ParamName);
        Assert.Contains(name, e.Message);
    }

    private static double[] D(Tensor t) => Check.ToDouble(t.Span);

    private static double[] Twice(float[] v)
    {
        var r = new double[v.Length];
        for (int i = 0; i < v.Length; i++) r[i] = 2.0 * v[i];
        return r;
    }
}
