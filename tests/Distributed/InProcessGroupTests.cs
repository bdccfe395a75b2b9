using UioLlm.Kernels;
using UioLlm.Kernels.Distributed;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using UioLlm.Tests.Uio;
using UioLlm.Training;
using UioLlm.Training.Distributed;
using UioLlm.Training.Estimators;

namespace UioLlm.Tests.Distributed;

/// <summary>
/// Ring attention and data-parallel training with the ranks as threads of this process (<see cref="LocalGroup"/>):
/// they run everywhere, MPI or not; <see cref="MpiTests"/> runs the same code across processes under mpirun.
/// </summary>
public sealed class InProcessGroupTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("uio-dp-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    // ------------------------------------------------------------------ ring attention

    [Theory]
    [InlineData(1, true, 5, 2, 2, 8)]
    [InlineData(2, true, 6, 4, 2, 16)]
    [InlineData(3, true, 4, 4, 1, 8)]
    [InlineData(3, false, 5, 2, 2, 8)]
    [InlineData(4, true, 3, 2, 2, 4)]
    public void RingAttentionEqualsDenseAttentionOverTheWholeSequence(int ranks, bool causal, int t, int hq, int hkv, int d)
    {
        var (q, k, v, dO) = Problem(ranks * t, hq, hkv, d, seed: 10 * ranks + t);
        var p = DenseProblem(ranks * t, hq, hkv, d, causal);
        var (oRef, lseRef) = AttentionReference.Forward(p, Doubles(q), Doubles(k), Doubles(v));
        var (dqRef, dkRef, dvRef) = AttentionReference.Backward(p, Doubles(q), Doubles(k), Doubles(v), Doubles(dO));

        var blocks = LocalGroup.Run(ranks, group => Ring(group, q, k, v, dO, t, hq, hkv, d, causal, gradientStart: 0.5f));
        for (int r = 0; r < ranks; r++)
        {
            var b = blocks[r];
            Check.Close(Block(oRef, r, t * hq * d), b.O, 1e-5, 1e-4, $"o of rank {r}");
            var lseBlock = new double[hq * t];
            for (int h = 0; h < hq; h++) Array.Copy(lseRef, h * ranks * t + r * t, lseBlock, h * t, t);
            Check.Close(lseBlock, b.Lse, 1e-5, 1e-4, $"lse of rank {r}");
            // Gradients accumulate into what was there (0.5).
            Check.Close(Block(dqRef, r, t * hq * d), b.Dq.Select(x => x - 0.5f).ToArray(), 1e-5, 1e-4, $"dq of rank {r}");
            Check.Close(Block(dkRef, r, t * hkv * d), b.Dk.Select(x => x - 0.5f).ToArray(), 1e-5, 1e-4, $"dk of rank {r}");
            Check.Close(Block(dvRef, r, t * hkv * d), b.Dv.Select(x => x - 0.5f).ToArray(), 1e-5, 1e-4, $"dv of rank {r}");
        }
    }

    [Fact]
    public void RingAttentionBackwardMatchesFiniteDifferencesOfItsForward()
    {
        const int ranks = 3, t = 3, hq = 2, hkv = 1, d = 4;
        var (q, k, v, dO) = Problem(ranks * t, hq, hkv, d, seed: 5);
        var rng = new Rng(6);
        var (uq, uk, uv) = (rng.Uniform(q.Length), rng.Uniform(k.Length), rng.Uniform(v.Length));
        // L = sum over ranks of <o, dO>, a function of the whole q, k, v.
        double Loss(float eps)
        {
            float[] Shift(float[] x, float[] u) => x.Select((a, i) => a + eps * u[i]).ToArray();
            var blocks = LocalGroup.Run(ranks, g => Ring(g, Shift(q, uq), Shift(k, uk), Shift(v, uv), dO, t, hq, hkv, d, causal: true, gradientStart: 0f));
            double sum = 0;
            for (int r = 0; r < ranks; r++)
                for (int i = 0; i < blocks[r].O.Length; i++) sum += (double)blocks[r].O[i] * dO[r * t * hq * d + i];
            return sum;
        }
        var exact = LocalGroup.Run(ranks, g => Ring(g, q, k, v, dO, t, hq, hkv, d, causal: true, gradientStart: 0f));
        double analytic = 0;
        for (int r = 0; r < ranks; r++)
        {
            analytic += Dot(exact[r].Dq, uq, r * t * hq * d) + Dot(exact[r].Dk, uk, r * t * hkv * d) + Dot(exact[r].Dv, uv, r * t * hkv * d);
        }
        const float eps = 1e-2f;
        double numeric = (Loss(eps) - Loss(-eps)) / (2 * eps);
        Assert.True(Math.Abs(numeric - analytic) <= 2e-3 * Math.Max(1, Math.Abs(analytic)), $"finite difference {numeric}, backward {analytic}");
    }

    [Fact]
    public void RingAttentionRefusesBlocksOfDifferentShapesNamingTheRank()
    {
        var e = Assert.Throws<AggregateException>(() => LocalGroup.Run(2, group =>
        {
            var acc = TestBackend.Shared;
            int t = group.Rank == 0 ? 4 : 5;
            using var q = acc.Allocate(t, 2, 4);
            using var k = acc.Allocate(t, 2, 4);
            using var v = acc.Allocate(t, 2, 4);
            using var o = acc.Allocate(t, 2, 4);
            using var lse = acc.Allocate(2, t);
            RingAttention.Forward(group, q, k, v, o, lse, causal: true);
            return 0;
        }));
        Assert.Contains("every rank must hold the same shape", e.InnerException!.Message);
        Assert.Contains("rank 1", e.InnerException.Message);
    }

    [Theory]
    [InlineData(2, 5)]
    [InlineData(3, 4)]
    public void SequenceParallelLogitsEqualTheWholeSequenceForward(int ranks, int t)
    {
        var model = new LlamaModel(GradCheck.RandomWeights(GradCheck.TinyConfig(), 31));
        var ids = new Rng(32).Ints(ranks * t, 0, 37);
        using var tape = new Tape(model.Accelerator);
        var full = model.Forward(tape, ids).Value.ToArray();
        var blocks = LocalGroup.Run(ranks, g =>
        {
            using var logits = SequenceParallel.Logits(model, g, ids.AsSpan(g.Rank * t, t));
            return logits.ToArray();
        });
        for (int r = 0; r < ranks; r++)
            Check.Close(full.AsSpan(r * t * 37, t * 37), blocks[r], 1e-5, 1e-4, $"logits of rank {r}");
    }

    [Fact]
    public void SequenceParallelRefusesLocalLayers()
    {
        var model = new LlamaModel(GradCheck.RandomWeights(GradCheck.TinyConfig() with { LocalLayers = 1, LocalWindow = 4 }, 31));
        var e = Assert.Throws<AggregateException>(() => LocalGroup.Run(1, g => SequenceParallel.Logits(model, g, [1, 2, 3])));
        Assert.Contains("local", e.InnerException!.Message);
    }

    // ------------------------------------------------------------------ gradient reduction

    [Fact]
    public void FastModeSumsEveryRanksGradientsAcrossBucketBoundaries()
    {
        int[][] shapes = [[7], [2, 3], [1], [11]];
        var results = LocalGroup.Run(3, group =>
        {
            var acc = TestBackend.Shared;
            var grads = shapes.Select((s, i) => acc.FromArray(new Rng(10 * group.Rank + i).Uniform(s.Aggregate(1, (a, b) => a * b)), s)).ToList();
            var reducer = new DataParallelReducer(group, deterministic: false, bucketElements: 5);
            var totals = reducer.Reduce(grads, new StepTotals(group.Rank + 0.25, group.Rank + 1, 4), documents: 3);
            var values = grads.Select(g => g.ToArray()).ToArray();
            foreach (var g in grads) g.Dispose();
            return (values, totals, reducer.AllReduceCalls);
        });
        for (int i = 0; i < shapes.Length; i++)
        {
            var expected = new double[results[0].values[i].Length];
            for (int r = 0; r < 3; r++)
            {
                var part = new Rng(10 * r + i).Uniform(expected.Length);
                for (int j = 0; j < expected.Length; j++) expected[j] += part[j];
            }
            foreach (var res in results) Check.Close(expected, res.values[i], 1e-6, 1e-6, $"tensor {i}");
        }
        Assert.All(results, res => Assert.Equal(new StepTotals(3.75, 6, 12), res.totals));
        Assert.All(results, res => Assert.Equal(5, res.AllReduceCalls));   // 25 floats in buckets of 5
    }

    [Fact]
    public void DeterministicModeGivesTheSameBitsForAnyNumberOfRanks()
    {
        const int documents = 5;
        float[] Document(int d) => new Rng(100 + d).Normal(13, std: 1e3f);   // large values: the order of additions shows
        float[] ReduceOn(int ranks) => LocalGroup.Run(ranks, group =>
        {
            var acc = TestBackend.Shared;
            using var g = acc.Allocate(13);
            acc.Kernels.Fill(g, 0f);
            var reducer = new DataParallelReducer(group, deterministic: true);
            for (int d = 0; d < documents; d++)
            {
                if (!reducer.Computes(d)) continue;
                g.CopyFrom(Document(d));
                reducer.DocumentDone(d, [g], new StepTotals(d, 1, 1));
                Assert.All(g.ToArray(), x => Assert.Equal(0f, x));   // each document is taken alone
            }
            var totals = reducer.Reduce([g], default, documents);
            Assert.Equal(new StepTotals(10, 5, 5), totals);
            return g.ToArray();
        }).Aggregate((a, b) => a.SequenceEqual(b) ? a : throw new InvalidOperationException("ranks disagree"));

        var one = ReduceOn(1);
        Assert.Equal(one, ReduceOn(2));
        Assert.Equal(one, ReduceOn(3));
        var expected = new float[13];
        for (int d = 0; d < documents; d++)
            for (int i = 0; i < 13; i++) expected[i] += Document(d)[i];
        Assert.Equal(expected, one);
    }

    [Fact]
    public void DocumentsAreDealtRoundRobin()
    {
        var owners = LocalGroup.Run(3, group =>
        {
            var reducer = new DataParallelReducer(group);
            return Enumerable.Range(0, 7).Where(reducer.Computes).ToArray();
        });
        Assert.Equal([0, 3, 6], owners[0]);
        Assert.Equal([1, 4], owners[1]);
        Assert.Equal([2, 5], owners[2]);
    }

    // ------------------------------------------------------------------ the trainer

    [Fact]
    public void TwoRankDeterministicTrainingEqualsOneRankBitForBitAndOnlyRankZeroWrites()
    {
        const int steps = 3, documentsPerStep = 3;
        float[][] TrainOn(ICommunicator group, string folder)
        {
            var baseModel = new LlamaModel(GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 512 }, 21));
            using var uio = new UioModel(baseModel, UioModelTests.Small(l: 4, n: 2), 21);
            UioModelTests.Randomise(uio, 22, std: 0.3f);
            var rng = new Rng(23);
            var docs = Enumerable.Range(0, 6).Select(i => rng.Ints((2 + i % 3) * 4 + 1, 0, 37)).ToArray();
            var options = new TrainingOptions { TotalSteps = steps, DocumentsPerStep = documentsPerStep, PeakLearningRate = 1e-2f, WarmupSteps = 0 };
            using var trainer = new Trainer(uio, new InMemoryTrainingData(docs), seed => new UnbiasedIncremental(1, seed), options, folder,
                new TrainerCallbacks { GradientReducer = new DataParallelReducer(group, deterministic: true) });
            trainer.Run();
            return uio.TrainableParameters().Select(p => p.Value.ToArray()).ToArray();
        }
        var one = LocalGroup.Run(1, g => TrainOn(g, Path.Combine(root, "one")))[0];
        var two = LocalGroup.Run(2, g => TrainOn(g, Path.Combine(root, g.Rank == 0 ? "two" : "two-rank1")));
        for (int p = 0; p < one.Length; p++)
        {
            Assert.Equal(one[p], two[0][p]);
            Assert.Equal(one[p], two[1][p]);
        }
        Assert.True(File.Exists(Path.Combine(root, "two", "metrics.csv")));
        Assert.True(Directory.Exists(Path.Combine(root, "two", "checkpoints")));
        Assert.False(Directory.Exists(Path.Combine(root, "two-rank1")), "rank 1 must not write a run folder");
        Assert.Equal(File.ReadAllLines(Path.Combine(root, "one", "metrics.csv")).Select(l => string.Join(',', l.Split(',').Take(5))),
            File.ReadAllLines(Path.Combine(root, "two", "metrics.csv")).Select(l => string.Join(',', l.Split(',').Take(5))));
    }

    // ------------------------------------------------------------------ helpers

    private sealed record RingResult(float[] O, float[] Lse, float[] Dq, float[] Dk, float[] Dv);

    /// <summary>This rank's block of the whole q, k, v, dO through ring attention forward and backward.</summary>
    private static RingResult Ring(ICommunicator group, float[] q, float[] k, float[] v, float[] dO, int t, int hq, int hkv, int d, bool causal, float gradientStart)
    {
        var acc = TestBackend.Shared;
        int r = group.Rank;
        using var qb = acc.FromArray(q.AsSpan(r * t * hq * d, t * hq * d), [t, hq, d]);
        using var kb = acc.FromArray(k.AsSpan(r * t * hkv * d, t * hkv * d), [t, hkv, d]);
        using var vb = acc.FromArray(v.AsSpan(r * t * hkv * d, t * hkv * d), [t, hkv, d]);
        using var dOb = acc.FromArray(dO.AsSpan(r * t * hq * d, t * hq * d), [t, hq, d]);
        using var o = acc.Allocate(t, hq, d);
        using var lse = acc.Allocate(hq, t);
        using var dq = acc.Allocate(t, hq, d);
        using var dk = acc.Allocate(t, hkv, d);
        using var dv = acc.Allocate(t, hkv, d);
        foreach (var g in new[] { dq, dk, dv }) acc.Kernels.Fill(g, gradientStart);
        RingAttention.Forward(group, qb, kb, vb, o, lse, causal);
        RingAttention.Backward(group, qb, kb, vb, o, dOb, lse, causal, dq, dk, dv);
        return new RingResult(o.ToArray(), lse.ToArray(), dq.ToArray(), dk.ToArray(), dv.ToArray());
    }

    private static (float[] Q, float[] K, float[] V, float[] DO) Problem(int total, int hq, int hkv, int d, int seed)
    {
        var rng = new Rng(seed);
        return (rng.Uniform(total * hq * d), rng.Uniform(total * hkv * d), rng.Uniform(total * hkv * d), rng.Uniform(total * hq * d));
    }

    private static AttentionProblem DenseProblem(int total, int hq, int hkv, int d, bool causal)
    {
        var mask = new bool[hq, total, total];
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < total; i++)
                for (int j = 0; j < total; j++) mask[h, i, j] = !causal || j <= i;
        return new AttentionProblem(1, total, total, hq, hkv, d, mask, 1.0 / Math.Sqrt(d));
    }

    private static double[] Doubles(float[] x) => x.Select(a => (double)a).ToArray();

    private static double[] Block(double[] whole, int rank, int length) => whole.AsSpan(rank * length, length).ToArray();

    private static double Dot(float[] a, float[] u, int offset)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * u[offset + i];
        return s;
    }
}
