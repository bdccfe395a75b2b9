using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class SwiGluTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    public static TheoryData<int, int> Cases()
    {
        var data = new TheoryData<int, int>();
        foreach (int w in new[] { 128, 256, 512 })
            foreach (int n in new[] { 1, 7, 17, 33, 1003 })
                data.Add(w, n);
        data.Add(256, 40_001); // parallel path
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void ForwardMatchesReference(int width, int n)
    {
        using var simd = Width(width);
        var rng = new Rng(n + width);
        float[] gate = rng.Uniform(n, -8f, 8f), up = rng.Uniform(n);
        using var tg = Tensor(acc, gate, "gate", n);
        using var tu = Tensor(acc, up, "up", n);
        using var th = acc.Allocate([n], "h");
        K.SwiGlu(tg, tu, th);
        Check.Close(SwiGluReference.Forward(D(gate), D(up)), th.ToArray(), 1e-6, 2e-6, "h");
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void LargeGatesStayFinite(int width)
    {
        using var simd = Width(width);
        float[] gate = [-1e4f, -200f, -90f, -88.5f, -30f, 0f, 30f, 88.5f, 90f, 200f, 1e4f, -50f, 50f, -100f, 100f, 1e30f, -1e30f];
        float[] up = Enumerable.Repeat(1.5f, gate.Length).ToArray();
        float[] dh = Enumerable.Repeat(0.5f, gate.Length).ToArray();
        using var tg = Tensor(acc, gate, "gate", gate.Length);
        using var tu = Tensor(acc, up, "up", gate.Length);
        using var tdh = Tensor(acc, dh, "dh", gate.Length);
        using var th = acc.Allocate([gate.Length], "h");
        using var dg = acc.Allocate([gate.Length], "dGate");
        using var du = acc.Allocate([gate.Length], "dUp");
        K.SwiGlu(tg, tu, th);
        K.SwiGluBackward(tg, tu, tdh, dg, du);
        var expectedH = SwiGluReference.Forward(D(gate), D(up));
        Check.Close(expectedH, th.ToArray(), 1e-6, 1e-6, "h");
        Assert.All(dg.ToArray(), v => Assert.True(float.IsFinite(v), $"dGate {v}"));
        Assert.All(du.ToArray(), v => Assert.True(float.IsFinite(v), $"dUp {v}"));
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void GradientsMatchFiniteDifferences(int width)
    {
        using var simd = Width(width);
        const int n = 37;
        var rng = new Rng(21);
        float[] gate = rng.Uniform(n, -6f, 6f), up = rng.Uniform(n), g = rng.Uniform(n);
        double[] gd = D(gate), ud = D(up);
        var numGate = FiniteDifference.Gradient(v => FiniteDifference.Dot(SwiGluReference.Forward(v, ud), g), D(gate));
        var numUp = FiniteDifference.Gradient(v => FiniteDifference.Dot(SwiGluReference.Forward(gd, v), g), D(up));
        using var tg = Tensor(acc, gate, "gate", n);
        using var tu = Tensor(acc, up, "up", n);
        using var tdh = Tensor(acc, g, "dh", n);
        using var dg = acc.Allocate([n], "dGate");
        using var du = acc.Allocate([n], "dUp");
        K.SwiGluBackward(tg, tu, tdh, dg, du);
        Check.RelativeNorm(numGate, dg.ToArray(), 1e-5, "dGate");
        Check.RelativeNorm(numUp, du.ToArray(), 1e-5, "dUp");
    }

    [Theory]
    [InlineData(23)]
    [InlineData(40_001)]
    public void BackwardAccumulatesAndSkipsNulls(int n)
    {
        var rng = new Rng(n);
        float[] gate = rng.Uniform(n, -4f, 4f), up = rng.Uniform(n), g = rng.Uniform(n);
        using var tg = Tensor(acc, gate, "gate", n);
        using var tu = Tensor(acc, up, "up", n);
        using var tdh = Tensor(acc, g, "dh", n);
        using var dg = acc.Allocate([n], "dGate");
        using var du = acc.Allocate([n], "dUp");
        K.SwiGluBackward(tg, tu, tdh, dg, du);
        float[] onceG = dg.ToArray(), onceU = du.ToArray();
        K.SwiGluBackward(tg, tu, tdh, dg, null);
        K.SwiGluBackward(tg, tu, tdh, null, du);
        Check.Close(Times(onceG, 2), dg.ToArray(), 1e-6, 1e-6, "dGate twice");
        Check.Close(Times(onceU, 2), du.ToArray(), 1e-6, 1e-6, "dUp twice");
    }

    [Fact]
    public void BadShapesThrow()
    {
        using var a = acc.Allocate([4, 5], "gate");
        using var b = acc.Allocate([5, 4], "up");
        using var h = acc.Allocate([4, 5], "h");
        using var bad = acc.Allocate([20], "dGate");
        Assert.Contains("SwiGlu: up has shape [5, 4]", Assert.Throws<ArgumentException>(() => K.SwiGlu(a, b, h)).Message);
        Assert.Contains("dGate", Assert.Throws<ArgumentException>(() => K.SwiGluBackward(a, h, h, bad, null)).Message);
        Assert.Contains("alias", Assert.Throws<ArgumentException>(() => K.SwiGluBackward(a, h, h, a, null)).Message);
    }
}
