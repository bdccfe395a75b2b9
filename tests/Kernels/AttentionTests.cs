using System.Runtime.Intrinsics;
using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;
using UioLlm.Kernels.Cpu.FlashAttention;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Kernels;

public class AttentionTests
{
    private readonly Accelerator acc = TestBackend.Shared;

    private sealed record Case(AttentionMask Mask, int B, int Tq, int Tk, int Hq, int Hkv, int D);

    private static readonly Dictionary<string, Case> Cases = new()
    {
        ["none-D5"] = new(AttentionMask.None, 1, 37, 37, 4, 4, 5),
        ["none-more-queries-than-keys"] = new(AttentionMask.None, 1, 20, 7, 2, 1, 8),
        ["causal-prefix-gqa2-D24"] = new(AttentionMask.CausalMask(7), 1, 29, 36, 4, 2, 24),
        ["causal-gqa4-D64"] = new(AttentionMask.CausalMask(), 1, 70, 70, 4, 1, 64),
        ["window-sinks-prefix"] = new(AttentionMask.SlidingWindow(9, 3, 5), 1, 40, 45, 2, 1, 8),
        ["window"] = new(AttentionMask.SlidingWindow(4), 1, 33, 33, 2, 2, 16),
        ["step-expansion-prefix"] = new(AttentionMask.StepExpansion(5, 6, 4), 1, 35, 39, 4, 2, 16),
        ["groups-causal-shifted"] = new(AttentionMask.BlockDiagonal(8, causal: true, shiftUpperHalfHeads: true), 1, 41, 41, 4, 2, 12),
        ["groups-noncausal"] = new(AttentionMask.BlockDiagonal(6, causal: false), 1, 30, 30, 2, 1, 9),
        ["decode-with-cache"] = new(AttentionMask.CausalMask(6), 1, 3, 50, 4, 2, 24),
        ["single-query"] = new(AttentionMask.CausalMask(3), 1, 1, 77, 4, 4, 64),
        ["single-query-single-key"] = new(AttentionMask.None, 1, 1, 1, 2, 1, 8),
        ["batched-causal-prefix"] = new(AttentionMask.CausalMask(5), 3, 13, 18, 4, 2, 17),
        ["batched-step-expansion"] = new(AttentionMask.StepExpansion(3, 4), 2, 16, 16, 2, 2, 8),
        ["step-expansion-window"] = new(AttentionMask.StepExpansion(3, 4, 2, window: 3), 2, 15, 17, 4, 2, 8),
        ["step-expansion-memory-causal"] = new(AttentionMask.StepExpansion(4, 3, 5, memoryCausal: true), 1, 16, 21, 4, 2, 8),
        ["step-expansion-window-spans-prefix"] = new(AttentionMask.StepExpansion(4, 3, 6, window: 3, memoryCausal: true, windowSpansPrefix: true), 2, 16, 22, 4, 2, 8),
        ["no-keys"] = new(AttentionMask.None, 1, 5, 0, 2, 1, 4),
        // Up to four queries take the decode path: every mask kind, odd widths, GQA, a batch.
        ["decode-window-sinks-2q"] = new(AttentionMask.SlidingWindow(5, 2, 3), 1, 2, 40, 4, 2, 8),
        ["decode-step-expansion-4q"] = new(AttentionMask.StepExpansion(2, 1, 2), 1, 4, 6, 2, 1, 13),
        ["decode-groups-shifted-3q"] = new(AttentionMask.BlockDiagonal(4, causal: true, shiftUpperHalfHeads: true), 1, 3, 21, 4, 2, 5),
        ["decode-batched-gqa4-1q"] = new(AttentionMask.CausalMask(), 2, 1, 300, 8, 2, 48),
        ["decode-none-3q"] = new(AttentionMask.None, 1, 3, 17, 3, 1, 33),
        ["decode-no-keys"] = new(AttentionMask.None, 1, 2, 0, 2, 2, 4),
        ["decode-d8-gqa2-long"] = new(AttentionMask.CausalMask(3), 1, 2, 301, 8, 4, 8),
    };

    /// <summary>Small tiny-shape cases for the finite-difference checks.</summary>
    private static readonly Dictionary<string, Case> GradientCases = new()
    {
        ["causal-prefix-gqa2"] = new(AttentionMask.CausalMask(2), 1, 6, 8, 2, 1, 3),
        ["window-sinks"] = new(AttentionMask.SlidingWindow(3, 1, 1), 1, 7, 8, 2, 2, 4),
        ["step-expansion-gqa4"] = new(AttentionMask.StepExpansion(2, 2, 1), 1, 7, 8, 4, 1, 3),
        ["step-expansion-window"] = new(AttentionMask.StepExpansion(2, 3, 1, window: 2), 1, 8, 9, 2, 1, 3),
        ["step-expansion-memory-causal"] = new(AttentionMask.StepExpansion(3, 2, 2, memoryCausal: true), 1, 9, 11, 2, 1, 3),
        ["step-expansion-window-spans-prefix"] = new(AttentionMask.StepExpansion(3, 2, 3, window: 2, memoryCausal: true, windowSpansPrefix: true), 1, 9, 12, 2, 1, 3),
        ["groups-shifted"] = new(AttentionMask.BlockDiagonal(3, causal: true, shiftUpperHalfHeads: true), 1, 7, 7, 4, 2, 5),
        ["none"] = new(AttentionMask.None, 1, 5, 6, 2, 1, 5),
        ["batched"] = new(AttentionMask.CausalMask(1), 2, 4, 6, 2, 1, 3),
    };

    /// <summary>Kernel configurations: the test backend itself, and CPU kernels with forced vector widths, tiny tiles and forced parallelism.</summary>
    private static readonly string[] Configs = ["backend", "v256-tiny-tiles-2t", "v512-tiny-tiles-3t", "v128-serial", "v512-default-tiles"];

    private IKernels Kernels(string config) => config switch
    {
        "backend" => acc.Kernels,
        "v256-tiny-tiles-2t" => new CpuKernels(2) { AttentionVectors = AttentionSimd.Vector256, AttentionQueryTile = 5, AttentionKeyTile = 7, AttentionParallelWork = 0 },
        "v512-tiny-tiles-3t" => new CpuKernels(3) { AttentionVectors = AttentionSimd.Vector512, AttentionQueryTile = 6, AttentionKeyTile = 16, AttentionParallelWork = 0 },
        "v128-serial" => new CpuKernels(1) { AttentionVectors = AttentionSimd.Vector128 },
        "v512-default-tiles" => new CpuKernels(2) { AttentionVectors = AttentionSimd.Vector512, AttentionParallelWork = 0 },
        "v256-small-tiles" => new CpuKernels(2) { AttentionVectors = AttentionSimd.Vector256, AttentionQueryTile = 3, AttentionKeyTile = 4, AttentionParallelWork = 0 },
        _ => throw new ArgumentOutOfRangeException(nameof(config), config, "unknown kernel configuration"),
    };

    /// <summary>The forced CPU configurations only make sense on the CPU backend.</summary>
    private bool Applies(string config) => config == "backend" || acc.Kind == AcceleratorKind.Cpu;

    public static TheoryData<string, string> ForwardCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var name in Cases.Keys)
            foreach (var config in Configs) data.Add(name, config);
        return data;
    }

    public static TheoryData<string, string> GradientCheckCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var name in GradientCases.Keys)
            foreach (var config in new[] { "backend", "v256-small-tiles", "v512-tiny-tiles-3t" }) data.Add(name, config);
        return data;
    }

    private sealed class Problem : IDisposable
    {
        public required AttentionProblem Ref;
        public required AttentionMask Mask;
        public required Tensor Q, K, V, O, Lse, DO;
        public required float[] Qf, Kf, Vf, Gf;

        public void Dispose()
        {
            foreach (var t in new[] { Q, K, V, O, Lse, DO }) t.Dispose();
        }
    }

    private Problem Make(Case c, int seed)
    {
        var rng = new Rng(seed);
        int[] qShape = c.B == 1 && seed % 2 == 0 ? [c.Tq, c.Hq, c.D] : [c.B, c.Tq, c.Hq, c.D];
        int[] kShape = qShape.Length == 3 ? [c.Tk, c.Hkv, c.D] : [c.B, c.Tk, c.Hkv, c.D];
        int[] lseShape = qShape.Length == 3 ? [c.Hq, c.Tq] : [c.B, c.Hq, c.Tq];
        var qf = rng.Normal(c.B * c.Tq * c.Hq * c.D);
        var kf = rng.Normal(c.B * c.Tk * c.Hkv * c.D);
        var vf = rng.Normal(c.B * c.Tk * c.Hkv * c.D);
        var gf = rng.Normal(qf.Length);
        return new Problem
        {
            Ref = new AttentionProblem(c.B, c.Tq, c.Tk, c.Hq, c.Hkv, c.D, DenseMasks.Build(c.Mask, c.Hq, c.Tq, c.Tk), 1.0 / Math.Sqrt(c.D)),
            Mask = c.Mask,
            Q = acc.FromArray(qf, qShape, "q"), K = acc.FromArray(kf, kShape, "k"), V = acc.FromArray(vf, kShape, "v"),
            O = acc.Allocate(qShape, "o"), Lse = acc.Allocate(lseShape, "lse"), DO = acc.FromArray(gf, qShape, "dO"),
            Qf = qf, Kf = kf, Vf = vf, Gf = gf,
        };
    }

    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void ForwardMatchesDenseReference(string name, string config)
    {
        if (!Applies(config)) return;
        using var p = Make(Cases[name], seed: name.Length * 31 + config.Length);
        Kernels(config).Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask);
        var (o, lse) = AttentionReference.Forward(p.Ref, Check.ToDouble(p.Qf), Check.ToDouble(p.Kf), Check.ToDouble(p.Vf));
        Check.Close(o, p.O.ToArray(), 2e-5, 2e-4, $"{name}/{config} o");
        Check.Close(lse, p.Lse.ToArray(), 2e-5, 2e-5, $"{name}/{config} lse");
    }

    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void BackwardMatchesAnalyticReference(string name, string config)
    {
        if (!Applies(config)) return;
        using var p = Make(Cases[name], seed: name.Length * 17 + config.Length);
        var kernels = Kernels(config);
        kernels.Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask);
        using var dq = acc.Allocate(p.Q.Shape, "dq");
        using var dk = acc.Allocate(p.K.Shape, "dk");
        using var dv = acc.Allocate(p.V.Shape, "dv");
        kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dq, dk, dv);
        var (eq, ek, ev) = AttentionReference.Backward(p.Ref, Check.ToDouble(p.Qf), Check.ToDouble(p.Kf), Check.ToDouble(p.Vf), Check.ToDouble(p.Gf));
        Check.Close(eq, dq.ToArray(), 1e-4, 1e-3, $"{name}/{config} dq");
        Check.Close(ek, dk.ToArray(), 1e-4, 1e-3, $"{name}/{config} dk");
        Check.Close(ev, dv.ToArray(), 1e-4, 1e-3, $"{name}/{config} dv");
    }

    [Theory]
    [MemberData(nameof(GradientCheckCases))]
    public void BackwardMatchesFiniteDifferences(string name, string config)
    {
        if (!Applies(config)) return;
        var c = GradientCases[name];
        using var p = Make(c, seed: name.Length * 7 + 3);
        var kernels = Kernels(config);
        kernels.Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask);
        using var dq = acc.Allocate(p.Q.Shape, "dq");
        using var dk = acc.Allocate(p.K.Shape, "dk");
        using var dv = acc.Allocate(p.V.Shape, "dv");
        kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dq, dk, dv);

        double[] q = Check.ToDouble(p.Qf), k = Check.ToDouble(p.Kf), v = Check.ToDouble(p.Vf);
        // L = sum(o * g) as a function of each input in turn.
        double Loss(double[] qq, double[] kk, double[] vv) => FiniteDifference.Dot(AttentionReference.Forward(p.Ref, qq, kk, vv).O, p.Gf);
        Check.RelativeNorm(FiniteDifference.Gradient(x => Loss(x, k, v), q), dq.ToArray(), 2e-4, $"{name}/{config} dq");
        Check.RelativeNorm(FiniteDifference.Gradient(x => Loss(q, x, v), k), dk.ToArray(), 2e-4, $"{name}/{config} dk");
        Check.RelativeNorm(FiniteDifference.Gradient(x => Loss(q, k, x), v), dv.ToArray(), 2e-4, $"{name}/{config} dv");
    }

    [Fact]
    public void AnalyticReferenceMatchesFiniteDifferences()
    {
        using var p = Make(GradientCases["groups-shifted"], seed: 5);
        double[] q = Check.ToDouble(p.Qf), k = Check.ToDouble(p.Kf), v = Check.ToDouble(p.Vf);
        var (eq, ek, ev) = AttentionReference.Backward(p.Ref, q, k, v, Check.ToDouble(p.Gf));
        double Loss(double[] qq, double[] kk, double[] vv) => FiniteDifference.Dot(AttentionReference.Forward(p.Ref, qq, kk, vv).O, p.Gf);
        Check.RelativeNorm(FiniteDifference.Gradient(x => Loss(x, k, v), q), eq.Select(x => (float)x).ToArray(), 1e-5, "reference dq");
        Check.RelativeNorm(FiniteDifference.Gradient(x => Loss(q, x, v), k), ek.Select(x => (float)x).ToArray(), 1e-5, "reference dk");
        Check.RelativeNorm(FiniteDifference.Gradient(x => Loss(q, k, x), v), ev.Select(x => (float)x).ToArray(), 1e-5, "reference dv");
    }

    [Theory]
    [InlineData("backend")]
    [InlineData("v512-tiny-tiles-3t")]
    public void BackwardAccumulatesIntoGradients(string config)
    {
        if (!Applies(config)) return;
        using var p = Make(Cases["causal-prefix-gqa2-D24"], seed: 11);
        var kernels = Kernels(config);
        kernels.Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask);
        var rng = new Rng(12);
        var start = (Q: rng.Uniform(p.Q.Length), K: rng.Uniform(p.K.Length), V: rng.Uniform(p.V.Length));
        using var dq = acc.FromArray(start.Q, p.Q.Shape, "dq");
        using var dk = acc.FromArray(start.K, p.K.Shape, "dk");
        using var dv = acc.FromArray(start.V, p.V.Shape, "dv");
        using var oq = acc.Allocate(p.Q.Shape, "dq once");
        using var ok = acc.Allocate(p.K.Shape, "dk once");
        using var ov = acc.Allocate(p.V.Shape, "dv once");
        kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, oq, ok, ov);
        kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dq, dk, dv);
        kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dq, dk, dv);
        foreach (var (got, once, init, what) in new[] { (dq, oq, start.Q, "dq"), (dk, ok, start.K, "dk"), (dv, ov, start.V, "dv") })
        {
            var g = once.ToArray();
            Assert.Contains(g, x => x != 0f);
            var expected = new double[g.Length];
            for (int i = 0; i < g.Length; i++) expected[i] = init[i] + 2.0 * g[i];
            Check.Close(expected, got.ToArray(), 1e-5, 1e-5, $"{config} {what} after two backward calls");
        }
    }

    [Fact]
    public void NullGradientsAreSkipped()
    {
        using var p = Make(Cases["window-sinks-prefix"], seed: 21);
        acc.Kernels.Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask);
        using var dqAll = acc.Allocate(p.Q.Shape, "dq");
        using var dkAll = acc.Allocate(p.K.Shape, "dk");
        using var dvAll = acc.Allocate(p.V.Shape, "dv");
        acc.Kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dqAll, dkAll, dvAll);
        using var dkOnly = acc.Allocate(p.K.Shape, "dk");
        acc.Kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, null, dkOnly, null);
        Assert.Equal(dkAll.ToArray(), dkOnly.ToArray());
        using var dqOnly = acc.Allocate(p.Q.Shape, "dq");
        acc.Kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dqOnly, null, null);
        Assert.Equal(dqAll.ToArray(), dqOnly.ToArray());
        acc.Kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, null, null, null);
    }

    [Fact]
    public void QueriesThatSeeNoKeyGetZeroOutputMinusInfinityLseAndNoGradient()
    {
        using var p = Make(Cases["no-keys"], seed: 2);
        p.O.CopyFrom(Enumerable.Repeat(7f, p.O.Length).ToArray());
        acc.Kernels.Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask);
        Assert.All(p.O.ToArray(), x => Assert.Equal(0f, x));
        Assert.All(p.Lse.ToArray(), x => Assert.Equal(float.NegativeInfinity, x));
        using var dq = acc.Allocate(p.Q.Shape, "dq");
        acc.Kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dq, null, null);
        Assert.All(dq.ToArray(), x => Assert.Equal(0f, x));
    }

    [Fact]
    public void RowsWithMinusInfinityLseContributeNoGradient()
    {
        // A masked-out row (lse = -inf) must add nothing, even where its scores would be finite.
        using var p = Make(Cases["causal-prefix-gqa2-D24"], seed: 4);
        acc.Kernels.Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask);
        var lse = p.Lse.ToArray();
        for (int i = 0; i < lse.Length; i++) lse[i] = float.NegativeInfinity;
        p.Lse.CopyFrom(lse);
        using var dq = acc.Allocate(p.Q.Shape, "dq");
        using var dk = acc.Allocate(p.K.Shape, "dk");
        using var dv = acc.Allocate(p.V.Shape, "dv");
        acc.Kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dq, dk, dv);
        Assert.All(dq.ToArray().Concat(dk.ToArray()).Concat(dv.ToArray()), x => Assert.Equal(0f, x));
    }

    [Fact]
    public void ExplicitScaleIsUsed()
    {
        var c = Cases["causal-prefix-gqa2-D24"];
        using var p = Make(c, seed: 8);
        acc.Kernels.Attention(p.Q, p.K, p.V, p.O, p.Lse, p.Mask, scale: 0.37f);
        var r = p.Ref with { Scale = 0.37 };
        var (o, lse) = AttentionReference.Forward(r, Check.ToDouble(p.Qf), Check.ToDouble(p.Kf), Check.ToDouble(p.Vf));
        Check.Close(o, p.O.ToArray(), 2e-5, 2e-4, "o with scale 0.37");
        Check.Close(lse, p.Lse.ToArray(), 2e-5, 2e-5, "lse with scale 0.37");
        using var dq = acc.Allocate(p.Q.Shape, "dq");
        acc.Kernels.AttentionBackward(p.Q, p.K, p.V, p.O, p.DO, p.Lse, p.Mask, dq, null, null, scale: 0.37f);
        var (eq, _, _) = AttentionReference.Backward(r, Check.ToDouble(p.Qf), Check.ToDouble(p.Kf), Check.ToDouble(p.Vf), Check.ToDouble(p.Gf));
        Check.Close(eq, dq.ToArray(), 1e-4, 1e-3, "dq with scale 0.37");
    }

    [Theory]
    [InlineData(128)]
    [InlineData(256)]
    [InlineData(512)]
    public void VectorExp2IsAccurate(int bits)
    {
        var width = bits == 128 ? AttentionSimd.Vector128 : bits == 256 ? AttentionSimd.Vector256 : AttentionSimd.Vector512;
        var xs = new List<float> { 0f, -0.5f, 0.5f, -1f, -125.9f, -126f, 20f, -3.25f };
        var rng = new Rng(9);
        xs.AddRange(rng.Uniform(4000, -120f, 20f));
        foreach (float x in xs)
        {
            double expected = Math.Pow(2, x);
            float got = Exp2(width, x);
            Assert.True(Math.Abs(got - expected) <= 3e-7 * expected, $"{width}: 2^{x:G9} = {got:G9}, expected {expected:G9}");
        }
        foreach (float x in new[] { float.NegativeInfinity, -126.5f, -1000f })
            Assert.Equal(0f, Exp2(width, x));
    }

    private static float Exp2(AttentionSimd width, float x) => width switch
    {
        AttentionSimd.Vector128 => VectorMath.Exp2<Lanes128, Vector128<float>>(Vector128.Create(x)).GetElement(1),
        AttentionSimd.Vector256 => VectorMath.Exp2<Lanes256, Vector256<float>>(Vector256.Create(x)).GetElement(5),
        _ => VectorMath.Exp2<Lanes512, Vector512<float>>(Vector512.Create(x)).GetElement(13),
    };

    [Fact]
    public void BadShapesThrowNamingTheTensor()
    {
        var k = acc.Kernels;
        using var q = acc.Allocate([4, 4, 8], "q");
        using var kk = acc.Allocate([5, 2, 8], "k");
        using var v = acc.Allocate([5, 2, 8], "v");
        using var o = acc.Allocate([4, 4, 8], "o");
        using var lse = acc.Allocate([4, 4], "lse");
        var mask = AttentionMask.CausalMask(1);
        k.Attention(q, kk, v, o, lse, mask);   // the good call works

        void Throws(string name, Action call)
        {
            var e = Assert.ThrowsAny<ArgumentException>(call);
            Assert.Equal(name, e.ParamName);
            Assert.Contains(name, e.Message);
        }
        using var kBadD = acc.Allocate([5, 2, 6], "k");
        Throws("k", () => k.Attention(q, kBadD, v, o, lse, mask));
        using var kBadHeads = acc.Allocate([5, 3, 8], "k");
        Throws("k", () => k.Attention(q, kBadHeads, kBadHeads, o, lse, mask));
        using var vBad = acc.Allocate([6, 2, 8], "v");
        Throws("v", () => k.Attention(q, kk, vBad, o, lse, mask));
        using var oBad = acc.Allocate([4, 4, 7], "o");
        Throws("o", () => k.Attention(q, kk, v, oBad, lse, mask));
        using var lseBad = acc.Allocate([4, 5], "lse");
        Throws("lse", () => k.Attention(q, kk, v, o, lseBad, mask));
        using var qRank2 = acc.Allocate([4, 32], "q");
        Throws("q", () => k.Attention(qRank2, kk, v, o, lse, mask));
        using var kBatched = acc.Allocate([1, 5, 2, 8], "k");
        Throws("k", () => k.Attention(q, kBatched, kBatched, o, lse, mask));
        Throws("mask", () => k.Attention(q, kk, v, o, lse, AttentionMask.CausalMask(6)));
        Throws("mask", () => k.Attention(q, kk, v, o, lse, AttentionMask.CausalMask(3)));   // 4 queries, 2 non-prefix keys
        Throws("scale", () => k.Attention(q, kk, v, o, lse, mask, float.NaN));
        Assert.Throws<ArgumentNullException>(() => k.Attention(q, kk, v, null!, lse, mask));

        using var dO = acc.Allocate([4, 4, 8], "dO");
        using var dq = acc.Allocate([4, 4, 8], "dq");
        using var dkBad = acc.Allocate([5, 2, 9], "dk");
        Throws("dk", () => k.AttentionBackward(q, kk, v, o, dO, lse, mask, dq, dkBad, null));
        using var dOBad = acc.Allocate([4, 4, 9], "dO");
        Throws("dO", () => k.AttentionBackward(q, kk, v, o, dOBad, lse, mask, dq, null, null));
        Throws("dq", () => k.AttentionBackward(q, kk, v, o, dO, lse, mask, o, null, null));           // aliases o
        Throws("dk", () => k.AttentionBackward(q, kk, v, o, dO, lse, mask, null, kk, null));          // aliases k
        using var dkv = acc.Allocate([5, 2, 8], "dk");
        Throws("dv", () => k.AttentionBackward(q, kk, v, o, dO, lse, mask, null, dkv, dkv));                // dv aliases dk
        Throws("mask", () => k.AttentionBackward(q, kk, v, o, dO, lse, AttentionMask.StepExpansion(2, 1), dq, null, null));

        using var other = Accelerator.Create(AcceleratorKind.Cpu, 1);
        using var foreignV = other.Allocate([5, 2, 8], "v");
        Throws("v", () => k.Attention(q, kk, foreignV, o, lse, mask));
    }
}
