using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

/// <summary>The op added through the kernel kit (README, "Adding a kernel"): reference, odd shapes, finite differences, errors.</summary>
[Collection(OpsCollection.Name)]
public class SoftcapTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    [Theory]
    [InlineData(1)]
    [InlineData(37)]
    [InlineData(1003)]
    [InlineData(200_001)]   // the parallel path
    public void ForwardMatchesReference(int n)
    {
        var x = new Rng(n).Uniform(n, -120f, 120f);
        using var tx = Tensor(acc, x, "x", n);
        using var ty = acc.Allocate([n], "y");
        K.Softcap(tx, 30f, ty);
        Check.Close(SoftcapReference.Forward(D(x), 30), ty.ToArray(), 1e-5, 1e-6, "y");
        K.Softcap(tx, 30f, tx);   // in place
        Check.Close(SoftcapReference.Forward(D(x), 30), tx.ToArray(), 1e-5, 1e-6, "x in place");
    }

    [Theory]
    [InlineData(37)]
    [InlineData(301)]
    public void GradientMatchesFiniteDifferencesAndAccumulates(int n)
    {
        var rng = new Rng(3);
        float[] x = rng.Uniform(n, -60f, 60f), g = rng.Uniform(n), start = rng.Uniform(n);
        var numeric = FiniteDifference.Gradient(v => FiniteDifference.Dot(SoftcapReference.Forward(v, 30), g), D(x));
        using var tx = Tensor(acc, x, "x", n);
        using var tg = Tensor(acc, g, "dy", n);
        using var dx = Tensor(acc, start, "dx", n);
        K.SoftcapBackward(tx, 30f, tg, dx);
        var got = dx.ToArray();
        for (int i = 0; i < n; i++) got[i] -= start[i];   // accumulated onto what was there
        Check.RelativeNorm(numeric, got, 1e-5, "dx");
    }

    [Fact]
    public void ParallelBackwardMatchesTheDerivative()
    {
        const int n = 200_001;
        var rng = new Rng(4);
        float[] x = rng.Uniform(n, -60f, 60f), g = rng.Uniform(n);
        using var tx = Tensor(acc, x, "x", n);
        using var tg = Tensor(acc, g, "dy", n);
        using var dx = acc.Allocate([n], "dx");
        K.SoftcapBackward(tx, 30f, tg, dx);
        var expected = new double[n];
        for (int i = 0; i < n; i++)
        {
            double t = Math.Tanh(x[i] / 30.0);
            expected[i] = g[i] * (1 - t * t);
        }
        Check.Close(expected, dx.ToArray(), 1e-6, 1e-5, "dx");
    }

    [Fact]
    public void BadArgumentsAreRefusedByName()
    {
        using var x = acc.Allocate([4], "x");
        using var y = acc.Allocate([5], "y");
        Assert.Contains("y", Assert.Throws<ArgumentException>(() => K.Softcap(x, 30f, y)).Message);
        Assert.Contains("cap", Assert.Throws<ArgumentOutOfRangeException>(() => K.Softcap(x, 0f, x)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => K.Softcap(x, float.NaN, x));
        Assert.Contains("dx", Assert.Throws<ArgumentException>(() => K.SoftcapBackward(x, 30f, x, x)).Message);
    }
}
