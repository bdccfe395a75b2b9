using UioLlm.Kernels;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Kernels;

public class InfrastructureTests
{
    private readonly Accelerator acc = TestBackend.Shared;

    [Fact]
    public void TensorViewsShareStorage()
    {
        using var t = acc.FromArray([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [3, 2, 2]);
        var row = t.Row(1);
        Assert.Equal([2, 2], row.Shape.ToArray());
        Assert.Equal([4f, 5, 6, 7], row.ToArray());
        var slice = t.Slice(1, 2);
        Assert.Equal([2, 2, 2], slice.Shape.ToArray());
        slice.CopyFrom([-1, -2, -3, -4, -5, -6, -7, -8]);
        Assert.Equal(-1f, t.ToArray()[4]);
        var flat = t.View(-1, 4);
        Assert.Equal([3, 4], flat.Shape.ToArray());
    }

    [Fact]
    public void BadShapesAndIndicesThrowClearErrors()
    {
        using var t = acc.Allocate([3, 4], "x");
        var e = Assert.Throws<ArgumentException>(() => t.View(5, 3));
        Assert.Contains("'x' [3, 4]", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Slice(2, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Row(3));
        Assert.Throws<ArgumentException>(() => t.CopyFrom(new float[5]));
        Assert.Throws<ArgumentException>(() => acc.Allocate([-1, 2]));
    }

    [Fact]
    public void LargeTensorsLiveInZeroedAlignedNativeMemory()
    {
        using var acc = Accelerator.Create(AcceleratorKind.Cpu, 1);
        var big = acc.Allocate([3 << 20], "big");      // 12 MB: above the huge-page threshold
        var small = acc.Allocate([1000], "small");
        Assert.IsType<UioLlm.Kernels.Cpu.HugePageMemory>(big.Memory);
        Assert.IsNotType<UioLlm.Kernels.Cpu.HugePageMemory>(small.Memory);
        Assert.Equal(0, big.Address % (2 << 20));
        Assert.All(big.Span.ToArray(), v => Assert.Equal(0f, v));
        big.Span[^1] = 7f;
        var view = big.Slice(big.Length - 4, 4);
        Assert.Equal(7f, view.ToArray()[3]);
        acc.Kernels.Fill(view, 2f);
        Assert.Equal(2f, big.Span[^1]);
        big.Dispose();
        Assert.Throws<ObjectDisposedException>(() => big.Span[0]);
        small.Dispose();
    }

    [Fact]
    public void ScratchPoolReusesMemory()
    {
        var pool = acc.Scratch;
        DeviceMemory first;
        using (var a = pool.Rent(100)) first = a.Memory;
        using (var b = pool.Rent(120)) Assert.Same(first, b.Memory); // same 128-float bucket
        using var c = pool.Rent([3, 7], clear: true);
        Assert.All(c.ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void AutoFallsBackToCpuWithAReason()
    {
        using var a = Accelerator.Create(AcceleratorKind.Auto);
        if (a.Kind == AcceleratorKind.Cpu) Assert.False(string.IsNullOrEmpty(a.FallbackReason));
        Assert.Throws<ArgumentOutOfRangeException>(() => Accelerator.Create(AcceleratorKind.Cpu, threads: -1));
    }

    [Theory]
    [InlineData(RopeScalingKind.None)]
    [InlineData(RopeScalingKind.Linear)]
    [InlineData(RopeScalingKind.NtkAware)]
    [InlineData(RopeScalingKind.DynamicNtk)]
    [InlineData(RopeScalingKind.Yarn)]
    public void RopeTablesFollowBaselinesFormulas(RopeScalingKind kind)
    {
        const int d = 64, l = 2048;
        const double theta = 10000, s = 4;
        var table = RopeTable.Create(d, theta, new RopeScaling(kind, s, l), currentLength: 3 * l);
        var inv = table.InverseFrequency;
        double Plain(int i, double b = theta) => Math.Pow(b, -2.0 * i / d);
        for (int i = 0; i < d / 2; i++)
        {
            double expected = kind switch
            {
                RopeScalingKind.None => Plain(i),
                RopeScalingKind.Linear => Plain(i) / s,
                RopeScalingKind.NtkAware => Plain(i, theta * Math.Pow(s, d / (d - 2.0))),
                RopeScalingKind.DynamicNtk => Plain(i, theta * Math.Pow(s * 3 - (s - 1), d / (d - 2.0))),
                _ => YarnExpected(i),
            };
            Assert.Equal(expected, inv[i], 1e-12);
        }
        Assert.Equal(kind == RopeScalingKind.Yarn ? (float)(0.1 * Math.Log(s) + 1) : 1f, table.AttentionFactor);

        double YarnExpected(int i)
        {
            // low/high as in BASELINES.md, written out independently of the implementation.
            double low = Math.Max(0, Math.Floor(d * Math.Log(l / (2 * Math.PI * 32)) / (2 * Math.Log(theta))));
            double high = Math.Min(d - 1, Math.Ceiling(d * Math.Log(l / (2 * Math.PI * 1)) / (2 * Math.Log(theta))));
            double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
            return ramp * Plain(i) / s + (1 - ramp) * Plain(i);
        }
    }

    [Fact]
    public void RopeTableRejectsNonsense()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => RopeTable.Create(7));
        Assert.Throws<ArgumentOutOfRangeException>(() => RopeTable.Create(8, theta: 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => RopeTable.Create(8, scaling: new RopeScaling(RopeScalingKind.Linear, 0.5)));
    }

    [Fact]
    public void DynamicNtkEqualsPlainWithinOriginalContext()
    {
        var plain = RopeTable.Create(16);
        var dyn = RopeTable.Create(16, scaling: new RopeScaling(RopeScalingKind.DynamicNtk, 8, 512), currentLength: 100);
        for (int i = 0; i < 8; i++) Assert.Equal(plain.InverseFrequency[i], dyn.InverseFrequency[i], 1e-12);
    }
}
