using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Methods;

/// <summary>Each inference-time method against a plain reference of its defining property.</summary>
public sealed class MethodSessionTests
{
    private const int Vocab = 37;

    private static double[] ModelLogits(LlamaModel model, ReadOnlySpan<int> ids)
    {
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        return Check.ToDouble(model.Forward(tape, ids).Value.ToArray());
    }

    private static double LogProb(double[] logits, int row, int id)
    {
        var r = logits.AsSpan(row * Vocab, Vocab).ToArray().Select(v => (float)v).ToArray();
        return LogProbs.At(r, id);
    }

    [Fact]
    public void HostRopeMatchesTheKernel()
    {
        var rng = new Rng(1);
        foreach (var table in new[] { RopeTable.Create(8, 10000), RopeTable.Create(8, 500, new RopeScaling(RopeScalingKind.Yarn, 4, 16), RopeLayout.Interleaved) })
        {
            var x = rng.Normal(3 * 8, 1f);
            using var src = TestBackend.Shared.FromArray(x, [3, 1, 8]);
            using var dst = TestBackend.Shared.Allocate(3, 1, 8);
            int[] positions = [0, 7, 1234];
            TestBackend.Shared.Kernels.Rope(src, dst, positions, table);
            var expected = dst.ToArray();
            var actual = new float[8];
            for (int t = 0; t < 3; t++)
            {
                RopeMath.Rotate(x.AsSpan(t * 8, 8), actual, positions[t], table);
                Check.Close(expected.AsSpan(t * 8, 8), actual, 1e-5, 1e-4, $"row {t}");
            }
        }
    }

    [Fact]
    public void BaseWindowReReadsItsLastTokensFromPositionZero()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 3);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(4).Ints(21, 0, Vocab);
        const int W = 8, keep = 5, stride = W - keep;
        using var session = new BaseWindowSession(model, W, keep);
        var streamed = session.Feed(ids.AsSpan(0, 10)).Concat(session.Feed(ids.AsSpan(10))).ToArray();
        Assert.True(double.IsNaN(streamed[0]));
        for (int t = 1; t < ids.Length; t++)
        {
            // Token t is predicted after token u = t - 1, read in the window that started at `start`.
            int u = t - 1, start = u < W ? 0 : ((u - W) / stride + 1) * stride;
            var logits = ModelLogits(model, ids.AsSpan(start, u - start + 1));
            Assert.True(Math.Abs(LogProb(logits, u - start, ids[t]) - streamed[t]) < 1e-4, $"token {t} (window from {start})");
        }
        Assert.False(session.OutOfTrainedRange);
        Assert.True(session.Length <= W);
    }

    [Fact]
    public void FullAttentionIsTheModelOverTheWholeStreamAndMarksWhereItLeavesTheWindow()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 5);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(6).Ints(70, 0, Vocab);
        using var session = new FullAttentionSession(model, chunk: 16);
        var streamed = session.Feed(ids.AsSpan(0, 64));
        Assert.False(session.OutOfTrainedRange);   // distances 0..63: inside the 64-token window
        streamed = [.. streamed, .. session.Feed(ids.AsSpan(64))];
        Assert.True(session.OutOfTrainedRange);
        var logits = ModelLogits(model, ids);
        for (int t = 1; t < ids.Length; t++) Assert.True(Math.Abs(LogProb(logits, t - 1, ids[t]) - streamed[t]) < 1e-4, $"token {t}");
        Assert.Equal(2L * 2 * 70 * model.Config.KvDim * 4, session.KvBytes);
    }

    [Fact]
    public void EveryRopeScalingIsTheBaseAtScaleOne()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 7);
        var model = new LlamaModel(weights);
        var plain = model.Rope.InverseFrequency.ToArray();
        var tables = new Dictionary<string, RopeTable>
        {
            ["pi"] = RopeScalingMethods.Scaled(model, RopeScalingKind.Linear, 1),
            ["ntk"] = RopeScalingMethods.Scaled(model, RopeScalingKind.NtkAware, 1),
            ["dynamic-ntk"] = RopeScalingMethods.Scaled(model, RopeScalingKind.DynamicNtk, 1, streamLength: 64),
            ["yarn"] = RopeScalingMethods.Scaled(model, RopeScalingKind.Yarn, 1),
            ["abf"] = RopeScalingMethods.RaisedBase(model, model.Config.RopeTheta),
            ["truncated"] = RopeScalingMethods.Truncated(model, 0, 0, 0),
        };
        foreach (var (name, table) in tables)
        {
            Assert.True(plain.SequenceEqual(table.InverseFrequency.ToArray()), name);
            Assert.Equal(1f, table.AttentionFactor);
        }
        // And through the registry: pi:factor=1 gives the full-attention log-probs exactly.
        int[] ids = new Rng(8).Ints(40, 0, Vocab);
        var context = new MethodContext(model);
        using var full = MethodRegistry.Resolve("full", context)[0];
        using var a = full.Create();
        var expected = a.Feed(ids);
        foreach (var method in MethodRegistry.Resolve("pi:factor=1,yarn:factor=1,ntk:factor=1,abf:theta=10000,truncated-rope:high=0:low=0:rho=0", context))
            using (method)
            using (var s = method.Create())
                Assert.True(expected.SequenceEqual(s.Feed(ids)), method.Label);
    }

    [Fact]
    public void RaisedBaseAndTruncatedTablesFollowTheirFormulas()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 9);
        var model = new LlamaModel(weights);
        int d = model.Config.HeadDim;
        var abf = RopeScalingMethods.RaisedBase(model, 500000);
        for (int i = 0; i < d / 2; i++) Assert.Equal(Math.Pow(500000, -2.0 * i / d), abf.InverseFrequency[i], 12);
        double high = 2, low = 0.5, rho = 0.002;   // head_dim 4: frequencies 1 (-> rho) and 0.01 (-> 0)
        var truncated = RopeScalingMethods.Truncated(model, low, high, rho);
        for (int i = 0; i < d / 2; i++)
        {
            double theta = model.Rope.InverseFrequency[i];
            double expected = theta >= high ? theta : theta > low ? rho : 0;
            Assert.Equal(expected, truncated.InverseFrequency[i]);
        }
        Assert.Equal([rho, 0.0], truncated.InverseFrequency.ToArray());
    }

    [Fact]
    public void ScaledRopeSessionsMatchTheReferenceWithTheirTables()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 10);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(11).Ints(80, 0, Vocab);
        foreach (var (name, table, session) in new (string, RopeTable, FullAttentionSession)[]
        {
            ("pi", RopeScalingMethods.Scaled(model, RopeScalingKind.Linear, 4), new FullAttentionSession(model, _ => RopeScalingMethods.Scaled(model, RopeScalingKind.Linear, 4), 256)),
            ("yarn", RopeScalingMethods.Scaled(model, RopeScalingKind.Yarn, 4), new FullAttentionSession(model, _ => RopeScalingMethods.Scaled(model, RopeScalingKind.Yarn, 4), 256)),
            // Dynamic NTK read in one step of 80 tokens: the table for length 80 applies to every key.
            ("dynamic-ntk", RopeScalingMethods.Scaled(model, RopeScalingKind.DynamicNtk, 2, 80),
                new FullAttentionSession(model, len => RopeScalingMethods.Scaled(model, RopeScalingKind.DynamicNtk, 2, len), long.MaxValue)),
        })
            using (session)
            {
                var streamed = session.Feed(ids);
                var reference = PairwiseLlamaReference.Logits(weights, ids, table, (_, i, j) => i - j, (_, _, i, _) => Enumerable.Repeat(true, i + 1).ToArray());
                for (int t = 1; t < ids.Length; t++)
                    Assert.True(Math.Abs(PairwiseLlamaReference.LogProb(reference, t - 1, ids[t]) - streamed[t]) < 2e-4, $"{name}, token {t}");
                Assert.False(session.OutOfTrainedRange, name);   // 80 tokens are inside 4 x 64 (and dynamic NTK has no limit)
            }
        Assert.NotEqual(1f, RopeScalingMethods.Scaled(model, RopeScalingKind.Yarn, 4).AttentionFactor);
    }

    [Fact]
    public void LmInfiniteIsTheLambdaMaskWithCappedDistances()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 12);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(13).Ints(40, 0, Vocab);
        const int G = 3, local = 7, cap = 10;
        using var session = new LmInfiniteSession(model, G, local, cap, chunk: 4);
        var streamed = new List<double>();
        foreach (var piece in new[] { (0, 2), (2, 9), (11, 1), (12, 28) }) streamed.AddRange(session.Feed(ids.AsSpan(piece.Item1, piece.Item2)));
        var reference = PairwiseLlamaReference.Logits(weights, ids, model.Rope, (_, i, j) => Math.Min(i - j, cap),
            (_, _, i, _) => Enumerable.Range(0, i + 1).Select(j => j < G || i - j < local).ToArray());
        for (int t = 1; t < ids.Length; t++)
            Assert.True(Math.Abs(PairwiseLlamaReference.LogProb(reference, t - 1, ids[t]) - streamed[t]) < 2e-4, $"token {t}");
        Assert.True(session.Length <= G + local - 1 + 4);   // the middle was evicted
        Assert.False(session.OutOfTrainedRange);           // every distance <= cap < 64
    }

    [Fact]
    public void RecurrenceReadsThePreviousSegmentsCachedStates()
    {
        const int l = 6;
        int[] ids = new Rng(14).Ints(3 * l, 0, Vocab);
        // Two segments: the cached states of segment 1 are exactly full attention's.
        using (var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 15))
        {
            var model = new LlamaModel(weights);
            using var session = new RecurrenceSession(model, l);
            var streamed = session.Feed(ids.AsSpan(0, 2 * l));
            var logits = ModelLogits(model, ids.AsSpan(0, 2 * l));
            for (int t = 1; t < 2 * l; t++) Assert.True(Math.Abs(LogProb(logits, t - 1, ids[t]) - streamed[t]) < 1e-4, $"token {t}");

            // Third segment, two layers: layer 1's cached states of segment 2 carry segment 1, so changing a token
            // of segment 1 moves segment 3's predictions (a plain 2l window could not see it).
            var changed = (int[])ids.Clone();
            changed[1] = (changed[1] + 1) % Vocab;
            using var a = new RecurrenceSession(model, l);
            using var b = new RecurrenceSession(model, l);
            var pa = a.Feed(ids);
            var pb = b.Feed(changed);
            Assert.Contains(Enumerable.Range(2 * l + 1, l - 1), t => Math.Abs(pa[t] - pb[t]) > 1e-5);
            Assert.Equal(l, a.CachedRows);
        }
        // One layer: layer-0 keys depend on their token only, so segment 3 is exactly the model over [segment 2 ; segment 3].
        using (var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { Layers = 1 }, seed: 16))
        {
            var model = new LlamaModel(weights);
            using var session = new RecurrenceSession(model, l);
            var streamed = session.Feed(ids);
            var logits = ModelLogits(model, ids.AsSpan(l, 2 * l));
            for (int t = 2 * l + 1; t < 3 * l; t++) Assert.True(Math.Abs(LogProb(logits, t - 1 - l, ids[t]) - streamed[t]) < 1e-4, $"token {t}");
        }
    }

    [Fact]
    public void KnnAttentionWithEveryKeyRetrievedAtTruePositionsIsFullAttention()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 17);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(18).Ints(50, 0, Vocab);
        using var session = new KnnAttentionSession(model, topK: 1000, window: 5, KnnPositions.Absolute, chunk: 7);
        var streamed = session.Feed(ids);
        var logits = ModelLogits(model, ids);
        for (int t = 1; t < ids.Length; t++) Assert.True(Math.Abs(LogProb(logits, t - 1, ids[t]) - streamed[t]) < 1e-4, $"token {t}");
    }

    [Fact]
    public void KnnAttentionReadsTheWindowAndEachHeadsExactTopK()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 19);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(20).Ints(45, 0, Vocab);
        const int W = 6, K = 3;
        using var session = new KnnAttentionSession(model, K, W, KnnPositions.Capped, chunk: 5);
        var streamed = session.Feed(ids);
        // Keys in the window at their distances; older keys at distance W, of which each head keeps its K best scores.
        var reference = PairwiseLlamaReference.Logits(weights, ids, model.Rope, (_, i, j) => i - j < W ? i - j : W, (_, _, i, scores) =>
        {
            var seen = Enumerable.Range(0, i + 1).Select(j => i - j < W).ToArray();
            foreach (int j in Enumerable.Range(0, Math.Max(0, i - W + 1)).OrderByDescending(j => scores[j]).Take(K)) seen[j] = true;
            return seen;
        });
        for (int t = 1; t < ids.Length; t++)
            Assert.True(Math.Abs(PairwiseLlamaReference.LogProb(reference, t - 1, ids[t]) - streamed[t]) < 2e-4, $"token {t}");
        Assert.False(session.OutOfTrainedRange);
    }

    [Fact]
    public void TopKIsExact()
    {
        var rng = new Rng(21);
        var scores = rng.Normal(200, 1f).Select(v => (double)v).ToArray();
        scores[17] = scores[18] = 5;   // a tie: the lower index first
        var top = NearestKeys.TopK(scores, 10);
        var expected = scores.Select((s, i) => (s, i)).OrderByDescending(p => p.s).ThenBy(p => p.i).Take(10).ToList();
        Assert.Equal(expected.Select(p => p.i), top.Select(p => p.Row));
        Assert.Equal(3, NearestKeys.TopK(scores.AsSpan(0, 3), 10).Count);
    }
}
