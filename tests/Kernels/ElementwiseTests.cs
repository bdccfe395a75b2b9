using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class ElementwiseTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    public static TheoryData<int, int> Cases()
    {
        var data = new TheoryData<int, int>();
        foreach (int w in new[] { 128, 256, 512 })
            foreach (int n in new[] { 1, 7, 17, 33, 1001 })
                data.Add(w, n);
        data.Add(256, (1 << 17) + 5); // parallel path
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void BinaryOpsMatchReference(int width, int n)
    {
        using var simd = Width(width);
        var rng = new Rng(n + width);
        float[] a = rng.Uniform(n), b = rng.Uniform(n), y0 = rng.Uniform(n);
        using var ta = Tensor(acc, a, "a", n);
        using var tb = Tensor(acc, b, "b", n);
        using var ty = Tensor(acc, y0, "y", n);

        K.Add(ta, tb, ty);
        Check.Close(ElementwiseReference.Zip(a, b, (p, q) => p + q), ty.ToArray(), 1e-6, 1e-6, $"Add n={n}");
        K.Multiply(ta, tb, ty);
        Check.Close(ElementwiseReference.Zip(a, b, (p, q) => p * q), ty.ToArray(), 1e-6, 1e-6, $"Multiply n={n}");
        K.Scale(ta, -2.5f, ty);
        Check.Close(ElementwiseReference.Map(a, p => -2.5 * p), ty.ToArray(), 1e-6, 1e-6, $"Scale n={n}");
        ty.CopyFrom(y0);
        K.Axpy(0.75f, ta, ty);
        Check.Close(ElementwiseReference.Zip(a, y0, (p, q) => 0.75 * p + q), ty.ToArray(), 1e-6, 1e-6, $"Axpy n={n}");
        K.Copy(tb, ty);
        Assert.Equal(b, ty.ToArray());
        K.Fill(ty, 3.25f);
        Assert.All(ty.ToArray(), v => Assert.Equal(3.25f, v));
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void OutputsMayAliasInputs(int width)
    {
        using var simd = Width(width);
        var rng = new Rng(3);
        float[] a = rng.Uniform(37), b = rng.Uniform(37);
        using var ta = Tensor(acc, a, "a", 37);
        using var tb = Tensor(acc, b, "b", 37);
        K.Add(ta, tb, ta);
        Check.Close(ElementwiseReference.Zip(a, b, (p, q) => p + q), ta.ToArray(), 1e-6, 1e-6, "Add into a");
        K.Multiply(ta, tb, tb);
        Check.Close(ElementwiseReference.Zip(a, b, (p, q) => (p + q) * q), tb.ToArray(), 1e-6, 1e-6, "Multiply into b");
        ta.CopyFrom(a);
        K.Scale(ta, 2f, ta);
        Check.Close(ElementwiseReference.Map(a, p => 2 * p), ta.ToArray(), 1e-6, 1e-6, "Scale in place");
    }

    [Fact]
    public void CopyNeedsEqualCountsButNotEqualShapes()
    {
        using var src = Tensor(acc, [1, 2, 3, 4, 5, 6], "src", 2, 3);
        using var dst = acc.Allocate([3, 2], "dst");
        K.Copy(src, dst);
        Assert.Equal([1f, 2, 3, 4, 5, 6], dst.ToArray());
        using var small = acc.Allocate([5], "small");
        var e = Assert.Throws<ArgumentException>(() => K.Copy(src, small));
        Assert.Contains("dst", e.Message);
    }

    [Fact]
    public void BadArgumentsThrowNamingTheTensor()
    {
        using var a = acc.Allocate([4, 3], "a");
        using var b = acc.Allocate([3, 4], "b");
        using var y = acc.Allocate([4, 3], "y");
        Assert.Contains("Add: b has shape [3, 4]", Assert.Throws<ArgumentException>(() => K.Add(a, b, y)).Message);
        Assert.Contains("Multiply: b", Assert.Throws<ArgumentException>(() => K.Multiply(a, b, y)).Message);
        Assert.Contains("Scale: y", Assert.Throws<ArgumentException>(() => K.Scale(a, 1f, b)).Message);
        Assert.Contains("Axpy: y", Assert.Throws<ArgumentException>(() => K.Axpy(1f, a, b)).Message);
        Assert.Throws<ArgumentNullException>(() => K.Add(a, null!, y));
        Assert.Throws<ArgumentNullException>(() => K.Fill(null!, 0f));

        // A view shifted by one element partially overlaps its source: rejected, not silently garbled.
        using var big = acc.Allocate([10], "big");
        var head = big.View(10).Slice(0, 9).Named("head");
        var tail = big.View(10).Slice(1, 9).Named("tail");
        Assert.Contains("overlaps", Assert.Throws<ArgumentException>(() => K.Scale(head, 2f, tail)).Message);

        using var other = Accelerator.Create(AcceleratorKind.Cpu, threads: 1);
        using var foreign = other.Allocate([4, 3], "foreign");
        Assert.Contains("another accelerator", Assert.Throws<ArgumentException>(() => K.Add(a, foreign, y)).Message);
    }

    [Fact]
    public void ScratchPoolClearUsesFill()
    {
        using (var dirty = acc.Scratch.Rent(64)) dirty.CopyFrom(new Rng(1).Uniform(64));
        using var clean = acc.Scratch.Rent([8, 8], clear: true);
        Assert.All(clean.ToArray(), v => Assert.Equal(0f, v));
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void GlobalNormMatchesReference(int width)
    {
        using var simd = Width(width);
        var rng = new Rng(11);
        int[] sizes = [1, 7, 17, 33, 1000, (1 << 17) + 3];
        var arrays = sizes.Select(n => rng.Uniform(n, -3f, 3f)).ToList();
        var tensors = arrays.Select((a, i) => Tensor(acc, a, $"t{i}", a.Length)).ToList();
        try
        {
            double expected = ElementwiseReference.GlobalNorm(arrays);
            Assert.Equal(expected, K.GlobalNorm(tensors), expected * 1e-6);
            Assert.Equal(0f, K.GlobalNorm([]));
        }
        finally
        {
            tensors.ForEach(t => t.Dispose());
        }
    }

    [Fact]
    public void GlobalNormRejectsNulls()
    {
        using var a = acc.Allocate([3], "a");
        Assert.Throws<ArgumentNullException>(() => K.GlobalNorm(null!));
        Assert.Contains("tensors[1]", Assert.Throws<ArgumentNullException>(() => K.GlobalNorm([a, null!])).Message);
    }
}
