using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

/// <summary>The per-row projection hook of the Llama block (<see cref="IRowProjections"/>) and the memory-causal step-expansion mask.</summary>
public sealed class RowProjectionHookTests
{
    /// <summary>Returns the base projection unchanged.</summary>
    private sealed class Identity(int[] rows) : IRowProjections
    {
        public IReadOnlyList<int> Rows => rows;
        public int Calls { get; private set; }

        public Var Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input, Var baseOutput)
        {
            Calls++;
            return baseOutput;
        }
    }

    /// <summary>Own trainable projections (one per kind) for the flagged rows.</summary>
    private sealed class Own(int[] rows, Dictionary<AttentionProjection, Linear> projections) : IRowProjections
    {
        public IReadOnlyList<int> Rows => rows;

        public Var Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input, Var baseOutput) =>
            projections[which].Forward(tape, input);
    }

    private static float[] Run(LlamaModel model, int[] ids, Func<int, IRowProjections?> hook)
    {
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        var x = model.Embed(tape, ids);
        var positions = Enumerable.Range(0, ids.Length).ToArray();
        for (int l = 0; l < model.Blocks.Count; l++) x = model.Blocks[l].Forward(tape, x, positions, rows: hook(l));
        return model.Head.Forward(tape, model.FinalNorm.Forward(tape, x)).Value.ToArray();
    }

    [Fact]
    public void AbsentOrIdentityHookIsBitIdentical()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 301);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(302).Ints(11, 0, 37);
        float[] plain;
        using (var tape = new Tape(model.Accelerator))
        using (tape.NoGrad())
            plain = model.Forward(tape, ids).Value.ToArray();
        var absent = Run(model, ids, _ => null);
        var identity = new Identity([1, 4, 10]);
        var hooked = Run(model, ids, _ => identity);
        Assert.Equal(plain, absent);
        Assert.Equal(plain, hooked);
        Assert.Equal(4 * model.Config.Layers, identity.Calls);   // q, k, v, o of every layer
    }

    [Fact]
    public void HookedRowsChangeOnlyThemselvesAndLaterRows()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 303);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(304).Ints(9, 0, 37);
        var own = OwnProjections(model, new Rng(305), requiresGrad: false);
        var plain = Run(model, ids, _ => null);
        var hooked = Run(model, ids, _ => new Own([5, 7], own));
        int vocab = model.Config.VocabSize;
        for (int t = 0; t < ids.Length; t++)
        {
            var a = plain.AsSpan(t * vocab, vocab).ToArray();
            var b = hooked.AsSpan(t * vocab, vocab).ToArray();
            if (t < 5) Assert.Equal(a, b);
            else Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, $"row {t}: the hooked projections changed nothing");
        }
        foreach (var p in own.Values) p.Weight.DisposeLeaf();
    }

    private static Dictionary<AttentionProjection, Linear> OwnProjections(LlamaModel model, Rng rng, bool requiresGrad)
    {
        var a = model.Blocks[0].Attention;
        Linear Make(Linear source)
        {
            var w = source.Weight.Value;
            var values = rng.Normal(w.Length, 0.4f);
            return new Linear(Var.Leaf(model.Accelerator.FromArray(values, w.Shape, $"own.{w.Name}"), requiresGrad));
        }
        return new()
        {
            [AttentionProjection.Query] = Make(a.Q), [AttentionProjection.Key] = Make(a.K),
            [AttentionProjection.Value] = Make(a.V), [AttentionProjection.Output] = Make(a.O),
        };
    }

    [Fact]
    public void GradientsThroughHookedProjectionsMatchFiniteDifferences()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 306);
        var model = new LlamaModel(weights);
        var rng = new Rng(307);
        int[] ids = rng.Ints(8, 0, 37);
        int[] targets = rng.Ints(8, 0, 37);
        var own = OwnProjections(model, rng, requiresGrad: true);
        var parameters = own.Values.Select(l => l.Weight).ToList();
        var positions = Enumerable.Range(0, ids.Length).ToArray();
        Var Loss(Tape tape)
        {
            var x = model.Embed(tape, ids);
            for (int l = 0; l < model.Blocks.Count; l++)
                x = model.Blocks[l].Forward(tape, x, positions, rows: l == 0 ? new Own([2, 3, 6], own) : null);
            return model.Head.CrossEntropy(tape, model.FinalNorm.Forward(tape, x), targets);
        }
        using (var tape = new Tape(model.Accelerator))
            tape.Backward(Loss(tape));
        foreach (var p in parameters)
            Assert.True(p.Grad!.ToArray().Any(g => g != 0), $"{p.Name}: no gradient reached the hooked projection");
        double Eval()
        {
            using var tape = new Tape(model.Accelerator);
            using var _ = tape.NoGrad();
            return Loss(tape).Value.ToArray()[0];
        }
        GradCheck.PerTensor(Eval, parameters, rng, 1e-2, 3e-2, "hooked q/k/v/o projections");
        foreach (var p in parameters) p.DisposeLeaf();
    }

    [Fact]
    public void HookRefusesRowsOutsideTheInput()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 308);
        var model = new LlamaModel(weights);
        var e = Assert.Throws<ArgumentException>(() => Run(model, [1, 2, 3], _ => new Identity([3])));
        Assert.Contains("outside", e.Message);
        e = Assert.Throws<ArgumentException>(() => Run(model, [1, 2, 3], _ => new Identity([1, 1])));
        Assert.Contains("twice", e.Message);
    }

    [Fact]
    public void MemoryCausalStepExpansionMatchesDenseReference()
    {
        // [prefix 3 ; 8 ordinary ; 4 memory], stride 2: memory m sees the prefix, ordinary [0, 2(m+1)), memories 0..m.
        int p = 3, l = 8, n = 4, tq = l + n, tk = p + tq, hq = 4, hkv = 2, d = 8;
        var mask = AttentionMask.StepExpansion(n, 2, prefixLength: p, memoryCausal: true);
        mask.Validate("test", tq, tk);
        var dense = new bool[hq, tq, tk];
        Span<int> bounds = stackalloc int[2 * AttentionMask.MaxIntervals];
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < tq; i++)
            {
                var fromIntervals = new bool[tk];
                int count = mask.VisibleIntervals(h, hq, i, tq, tk, bounds);
                for (int c = 0; c < count; c++)
                    for (int j = bounds[2 * c]; j < bounds[2 * c + 1]; j++) fromIntervals[j] = true;
                for (int j = 0; j < tk; j++)
                {
                    int rk = j - p;
                    bool expected = j < p || (i < l ? rk <= i : (rk < l ? rk < Math.Min((i - l + 1) * 2, l) : rk <= i));
                    Assert.Equal(expected, mask.IsVisible(h, hq, i, j, tq, tk));
                    Assert.Equal(expected, fromIntervals[j]);
                    dense[h, i, j] = expected;
                }
            }
        var rng = new Rng(309);
        var q = rng.Normal(tq * hq * d, 1f);
        var k = rng.Normal(tk * hkv * d, 1f);
        var v = rng.Normal(tk * hkv * d, 1f);
        var problem = new AttentionProblem(1, tq, tk, hq, hkv, d, dense, 1 / Math.Sqrt(d));
        var (expectedO, _) = AttentionReference.Forward(problem, Check.ToDouble(q), Check.ToDouble(k), Check.ToDouble(v));
        var acc = TestBackend.Shared;
        using var tape = new Tape(acc);
        using var _ = tape.NoGrad();
        using var qt = acc.FromArray(q, [tq, hq, d]);
        using var kt = acc.FromArray(k, [tk, hkv, d]);
        using var vt = acc.FromArray(v, [tk, hkv, d]);
        var o = tape.Attention(Var.Constant(qt), Var.Constant(kt), Var.Constant(vt), mask);
        Check.Close(expectedO, o.Value.ToArray(), 1e-5, 1e-4, "memory-causal step expansion");
    }
}
