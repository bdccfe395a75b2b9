using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;
using UioLlm.Kernels.Cpu.Gemm;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Kernels;

/// <summary>
/// A frozen B operand is read from panels packed once and kept with the tensor: products must equal the
/// unfrozen ones exactly (same arithmetic, only the packing is skipped), and unfreezing must drop the panels.
/// </summary>
public class FrozenWeightTests
{
    /// <summary>m, n, k: ragged tiles, several K slices (K > KC), row- and column-split parallel products, LoRA-like shapes.</summary>
    public static TheoryData<int, int, int, bool, int> Cases()
    {
        var data = new TheoryData<int, int, int, bool, int>();
        foreach (var (m, n, k) in new[] { (3, 13, 5), (9, 13, 5), (64, 300, 288), (300, 64, 600), (130, 1000, 40), (1152, 288, 288), (256, 777, 288) })
            foreach (bool transB in new[] { false, true })
                foreach (int threads in new[] { 1, 2 })
                    data.Add(m, n, k, transB, threads);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void FrozenProductEqualsThePlainOne(int m, int n, int k, bool transB, int threads)
    {
        using var acc = new CpuAccelerator(threads);
        var rng = new Rng(m + 31 * n + 7 * k + (transB ? 1 : 0));
        using var a = acc.FromArray(rng.Uniform(m * k), [m, k]);
        using var b = acc.FromArray(rng.Uniform(n * k), transB ? [n, k] : [k, n]);
        using var plain = acc.Allocate(m, n);
        using var frozen = acc.Allocate(m, n);
        acc.Kernels.MatMul(a, b, plain, transB: transB);
        b.Freeze();
        for (int rep = 0; rep < 2; rep++) // the first call packs, the second reads the kept panels
        {
            acc.Kernels.MatMul(a, b, frozen, transB: transB);
            Assert.Equal(plain.ToArray(), frozen.ToArray());
        }
        // Decode-sized products stream B straight from storage and never pack it.
        if (m <= SmallM.MaxRows) Assert.Null(b.KernelCache);
        else Assert.NotNull(b.KernelCache);
    }

    [Fact]
    public void BothOrientationsAndTheBackwardUseTheFrozenWeight()
    {
        using var acc = new CpuAccelerator(2);
        var rng = new Rng(5);
        int t = 70, din = 50, dout = 90;
        using var x = acc.FromArray(rng.Uniform(t * din), [t, din]);
        using var w = acc.FromArray(rng.Uniform(dout * din), [dout, din]);
        using var dy = acc.FromArray(rng.Uniform(t * dout), [t, dout]);
        float[] Run()
        {
            using var y = acc.Allocate(t, dout);
            using var dx = acc.Allocate(t, din);
            acc.Kernels.MatMul(x, w, y, transB: true);
            acc.Kernels.MatMulBackward(x, w, y.Named("unused"), null, null, transB: true); // no outputs: a no-op
            acc.Kernels.MatMulBackward(x, w, dy, dx, null, transB: true);
            return [.. y.ToArray(), .. dx.ToArray()];
        }
        var expected = Run();
        w.Freeze();
        Assert.Equal(expected, Run());
        Assert.Equal(expected, Run());
    }

    [Fact]
    public void LoraReadsItsFrozenWeightFromPanels()
    {
        using var acc = new CpuAccelerator(1);
        var rng = new Rng(9);
        int t = 40, din = 24, dout = 36, r = 4;
        using var x = acc.FromArray(rng.Uniform(t * din), [t, din]);
        using var w = acc.FromArray(rng.Uniform(dout * din), [dout, din]);
        using var la = acc.FromArray(rng.Uniform(r * din), [r, din]);
        using var lb = acc.FromArray(rng.Uniform(dout * r), [dout, r]);
        float[] Run()
        {
            using var y = acc.Allocate(t, dout);
            using var xa = acc.Allocate(t, r);
            acc.Kernels.LoraMatMul(x, w, la, lb, 0.5f, y, xa);
            return y.ToArray();
        }
        var expected = Run();
        w.Freeze();
        Assert.Equal(expected, Run());
        Assert.NotNull(w.KernelCache);
    }

    [Fact]
    public void UnfreezingDropsThePanelsSoNewValuesAreSeen()
    {
        using var acc = new CpuAccelerator(1);
        var rng = new Rng(11);
        using var a = acc.FromArray(rng.Uniform(20 * 30), [20, 30]);
        using var b = acc.FromArray(rng.Uniform(30 * 40), [30, 40]);
        using var c = acc.Allocate(20, 40);
        b.Freeze();
        acc.Kernels.MatMul(a, b, c);
        b.Unfreeze();
        Assert.Null(b.KernelCache);
        acc.Kernels.Scale(b, 2f, b);
        using var expected = acc.Allocate(20, 40);
        acc.Kernels.MatMul(a, b, expected);
        b.Freeze();
        acc.Kernels.MatMul(a, b, c);
        Assert.Equal(expected.ToArray(), c.ToArray());
    }

    [Fact]
    public void KernelsRefuseToWriteIntoAFrozenTensor()
    {
        using var acc = new CpuAccelerator(1);
        using var w = acc.Allocate(4, 4);
        using var g = acc.Allocate(4, 4);
        using var m = acc.Allocate(4, 4);
        using var v = acc.Allocate(4, 4);
        w.Freeze();
        var e = Assert.Throws<ArgumentException>(() => acc.Kernels.AdamW(w, g, m, v, new AdamWStep(1e-3f, 1)));
        Assert.Contains("frozen", e.Message);
        Assert.Throws<ArgumentException>(() => acc.Kernels.Fill(w, 1f));
        Assert.Throws<ArgumentException>(() => acc.Kernels.MatMul(g, m, w));
        Assert.Throws<ArgumentException>(() => acc.Kernels.MatMulBackward(g, m, v, null, w));
        Assert.Contains("frozen", Assert.Throws<InvalidOperationException>(() => w.CopyFrom(new float[16])).Message);
        w.Unfreeze();
        w.CopyFrom(new float[16]);
    }
}
