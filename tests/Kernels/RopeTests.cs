using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class RopeTests
{
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    public static TheoryData<int, RopeLayout, int, int, int> Cases()
    {
        var data = new TheoryData<int, RopeLayout, int, int, int>();
        foreach (int w in new[] { 128, 256, 512 })
            foreach (var layout in new[] { RopeLayout.HalfSplit, RopeLayout.Interleaved })
                foreach (var (t, h, d) in new[] { (1, 1, 2), (3, 2, 14), (5, 3, 34), (2, 4, 64), (7, 1, 66) })
                    data.Add(w, layout, t, h, d);
        data.Add(256, RopeLayout.HalfSplit, 40, 8, 128);   // parallel path
        data.Add(256, RopeLayout.Interleaved, 40, 8, 128);
        return data;
    }

    private static int[] Positions(Rng rng, int n) => rng.Ints(n, 0, 5000);

    [Theory, MemberData(nameof(Cases))]
    public void ForwardAndBackwardMatchReference(int width, RopeLayout layout, int t, int h, int d)
    {
        using var simd = Width(width);
        var rng = new Rng(t * 100 + h * 10 + d);
        var table = RopeTable.Create(d, layout: layout);
        float[] x = rng.Uniform(t * h * d), g = rng.Uniform(t * h * d);
        int[] pos = Positions(rng, t);
        using var tx = Tensor(acc, x, "x", t, h, d);
        using var ty = acc.Allocate([t, h, d], "y");
        K.Rope(tx, ty, pos, table);
        Check.Close(RopeReference.Forward(D(x), 1, t, h, d, pos, table), ty.ToArray(), 2e-6, 1e-5, "y");

        // The rotation is linear: the gradient of sum(y * g) is R^T g, the forward of g with negated angles;
        // checked here through that identity in double (finite differences are below).
        using var tg = Tensor(acc, g, "dy", t, h, d);
        using var dx = acc.Allocate([t, h, d], "dx");
        K.RopeBackward(tg, dx, pos, table);
        Check.RelativeNorm(TransposeApply(D(g), t, h, d, pos, table), dx.ToArray(), 1e-5, "dx");
    }

    [Theory]
    [InlineData(RopeScalingKind.None, RopeLayout.HalfSplit)]
    [InlineData(RopeScalingKind.Linear, RopeLayout.Interleaved)]
    [InlineData(RopeScalingKind.NtkAware, RopeLayout.HalfSplit)]
    [InlineData(RopeScalingKind.DynamicNtk, RopeLayout.Interleaved)]
    [InlineData(RopeScalingKind.Yarn, RopeLayout.HalfSplit)]
    [InlineData(RopeScalingKind.Yarn, RopeLayout.Interleaved)]
    public void EveryScalingKindAndLargePositions(RopeScalingKind kind, RopeLayout layout)
    {
        const int t = 4, h = 2, d = 40;
        var table = RopeTable.Create(d, 10000, new RopeScaling(kind, 4, 512), layout, currentLength: 2000);
        var rng = new Rng((int)kind);
        float[] x = rng.Uniform(t * h * d);
        int[] pos = [0, 17, 100_000, 2_000_000];
        using var tx = Tensor(acc, x, "x", t, h, d);
        using var ty = acc.Allocate([t, h, d], "y");
        K.Rope(tx, ty, pos, table);
        Check.Close(RopeReference.Forward(D(x), 1, t, h, d, pos, table), ty.ToArray(), 3e-6, 1e-5, $"y ({kind})");
    }

    [Fact]
    public void KeptAnglesGrowWithThePositionsAskedFor()
    {
        const int h = 3, d = 16;
        var table = RopeTable.Create(d, 500, null, RopeLayout.HalfSplit);
        var rng = new Rng(3);
        foreach (int[] pos in new[] { new[] { 5 }, new[] { 3000, 2 }, new[] { 1, 65_535, 65_536 }, new[] { 300 } })
        {
            float[] x = rng.Uniform(pos.Length * h * d);
            using var tx = Tensor(acc, x, "x", pos.Length, h, d);
            using var ty = acc.Allocate([pos.Length, h, d], "y");
            K.Rope(tx, ty, pos, table);
            Check.Close(RopeReference.Forward(D(x), 1, pos.Length, h, d, pos, table), ty.ToArray(), 3e-6, 1e-5, $"y at {string.Join(",", pos)}");
        }
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void InPlaceAndBatchAxis(int width)
    {
        using var simd = Width(width);
        const int b = 3, t = 5, h = 2, d = 18;
        var rng = new Rng(9);
        foreach (var layout in new[] { RopeLayout.HalfSplit, RopeLayout.Interleaved })
        {
            var table = RopeTable.Create(d, layout: layout);
            float[] x = rng.Uniform(b * t * h * d);
            foreach (int[] pos in new[] { Positions(rng, t), Positions(rng, b * t) })
            {
                using var tx = Tensor(acc, x, "x", b, t, h, d);
                K.Rope(tx, tx, pos, table);
                Check.Close(RopeReference.Forward(D(x), b, t, h, d, pos, table), tx.ToArray(), 2e-6, 1e-5,
                    $"in-place y ({layout}, {pos.Length} positions)");
            }
        }
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void BackwardMatchesFiniteDifferencesAndAccumulates(int width)
    {
        using var simd = Width(width);
        const int b = 2, t = 3, h = 2, d = 10;
        var rng = new Rng(31);
        foreach (var layout in new[] { RopeLayout.HalfSplit, RopeLayout.Interleaved })
        {
            var table = RopeTable.Create(d, scaling: new RopeScaling(RopeScalingKind.Yarn, 8, 64), layout: layout);
            float[] x = rng.Uniform(b * t * h * d), g = rng.Uniform(b * t * h * d);
            int[] pos = [3, 0, 100_000];
            var numeric = FiniteDifference.Gradient(v => FiniteDifference.Dot(RopeReference.Forward(v, b, t, h, d, pos, table), g), D(x));
            using var tg = Tensor(acc, g, "dy", b, t, h, d);
            using var dx = acc.Allocate([b, t, h, d], "dx");
            K.RopeBackward(tg, dx, pos, table);
            Check.RelativeNorm(numeric, dx.ToArray(), 1e-5, $"dx ({layout})");
            K.RopeBackward(tg, dx, pos, table);
            Check.RelativeNorm(numeric.Select(v => 2 * v).ToArray(), dx.ToArray(), 1e-5, $"dx twice ({layout})");
        }
    }

    [Fact]
    public void BadArgumentsThrow()
    {
        var table = RopeTable.Create(8);
        using var x = acc.Allocate([3, 2, 8], "x");
        using var y = acc.Allocate([3, 2, 8], "y");
        using var x16 = acc.Allocate([3, 2, 16], "x");
        using var flat = acc.Allocate([6, 8], "x");
        using var y4 = acc.Allocate([2, 3, 2, 8], "y");
        Assert.Contains("head dimension 8", Assert.Throws<ArgumentException>(() => K.Rope(x16, x16, [0, 1, 2], table)).Message);
        Assert.Contains("x has shape [6, 8]", Assert.Throws<ArgumentException>(() => K.Rope(flat, flat, [0, 1, 2], table)).Message);
        Assert.Contains("positions has 2 entries", Assert.Throws<ArgumentException>(() => K.Rope(x, y, [0, 1], table)).Message);
        Assert.Contains("positions[1] = -4", Assert.Throws<ArgumentOutOfRangeException>(() => K.Rope(x, y, [0, -4, 2], table)).Message);
        Assert.Contains("y has shape [2, 3, 2, 8]", Assert.Throws<ArgumentException>(() => K.Rope(x, y4, [0, 1, 2], table)).Message);
        Assert.Throws<ArgumentNullException>(() => K.Rope(x, y, [0, 1, 2], null!));
        Assert.Contains("alias", Assert.Throws<ArgumentException>(() => K.RopeBackward(x, x, [0, 1, 2], table)).Message);
    }

    /// <summary>R^T g: the reference forward with every angle negated (sin flips sign, cos does not).</summary>
    private static double[] TransposeApply(double[] g, int t, int h, int d, int[] pos, RopeTable table)
    {
        var inv = table.InverseFrequency.ToArray();
        var y = new double[g.Length];
        int half = d / 2;
        for (int tok = 0; tok < t; tok++)
            for (int head = 0; head < h; head++)
                for (int i = 0; i < half; i++)
                {
                    double angle = pos[tok] * inv[i], c = Math.Cos(angle) * table.AttentionFactor, s = Math.Sin(angle) * table.AttentionFactor;
                    int baseIndex = (tok * h + head) * d;
                    int ia = baseIndex + (table.Layout == RopeLayout.HalfSplit ? i : 2 * i);
                    int ib = baseIndex + (table.Layout == RopeLayout.HalfSplit ? i + half : 2 * i + 1);
                    y[ia] = g[ia] * c + g[ib] * s;
                    y[ib] = g[ib] * c - g[ia] * s;
                }
        return y;
    }
}
