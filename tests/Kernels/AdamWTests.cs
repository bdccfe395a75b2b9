using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class AdamWTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    public static TheoryData<int, int> Cases()
    {
        var data = new TheoryData<int, int>();
        foreach (int w in new[] { 128, 256, 512 })
            foreach (int n in new[] { 1, 7, 17, 33, 999 })
                data.Add(w, n);
        data.Add(256, (1 << 17) + 9); // parallel path
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void SeveralStepsMatchReference(int width, int n)
    {
        using var simd = Width(width);
        var rng = new Rng(n * 3 + width);
        float[] p0 = rng.Uniform(n);
        using var p = Tensor(acc, p0, "param", n);
        using var g = acc.Allocate([n], "grad");
        using var m = acc.Allocate([n], "m");
        using var v = acc.Allocate([n], "v");
        double[] rp = D(p0), rm = new double[n], rv = new double[n];
        for (int step = 1; step <= 5; step++)
        {
            float[] grad = rng.Uniform(n, -2f, 2f);
            g.CopyFrom(grad);
            var s = new AdamWStep(1e-2f, step, Beta1: 0.9f, Beta2: 0.95f, Epsilon: 1e-8f, WeightDecay: 0.1f, GradScale: 0.5f);
            K.AdamW(p, g, m, v, s);
            AdamWReference.Step(rp, D(grad), rm, rv, s);
        }
        Check.Close(rp, p.ToArray(), 1e-6, 1e-5, "param");
        Check.Close(rm, m.ToArray(), 1e-6, 1e-5, "m");
        Check.Close(rv, v.ToArray(), 1e-7, 1e-5, "v");
    }

    [Fact]
    public void BadArgumentsThrow()
    {
        using var p = acc.Allocate([5], "param");
        using var g = acc.Allocate([6], "grad");
        using var m = acc.Allocate([5], "m");
        using var v = acc.Allocate([5], "v");
        Assert.Contains("grad has shape [6]", Assert.Throws<ArgumentException>(() => K.AdamW(p, g, m, v, new AdamWStep(1e-3f, 1))).Message);
        using var g5 = acc.Allocate([5], "grad");
        Assert.Contains("Step", Assert.Throws<ArgumentOutOfRangeException>(() => K.AdamW(p, g5, m, v, new AdamWStep(1e-3f, 0))).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => K.AdamW(p, g5, m, v, new AdamWStep(1e-3f, 1, Beta1: 1f)));
        Assert.Throws<ArgumentOutOfRangeException>(() => K.AdamW(p, g5, m, v, new AdamWStep(float.NaN, 1)));
        Assert.Contains("m", Assert.Throws<ArgumentException>(() => K.AdamW(p, g5, m, m, new AdamWStep(1e-3f, 1))).Message);
    }
}
