using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using static UioLlm.Tests.Methods.Trained.TrainedMethodSupport;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>Performer-style linear attention: FAVOR+ features, causal prefix sums, a recurrent session.</summary>
public sealed class LinearAttentionTests
{
    private static PerformerMethod Create(LlamaModel model, int seed, params (string Key, string Value)[] options) =>
        (PerformerMethod)PerformerMethod.Descriptor.Create(model, new MethodOptions(PerformerMethod.MethodName, options.ToDictionary(o => o.Key, o => o.Value)), seed);

    private static float[] LinearLogits(PerformerMethod method, int[] ids)
    {
        using var tape = new Tape(method.Base.Accelerator);
        using var _ = tape.NoGrad();
        return method.Model.Logits(tape, ids, (t, l, q, k, v, s) => method.Attention.Attend(t, l, q, k, v)).Value.ToArray();
    }

    [Fact]
    public void AccumulateMatchesFiniteDifferencesOnEveryParameter()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 401);
        var model = new LlamaModel(weights);
        using var method = Create(model, 402, ("rank", "2"), ("alpha", "2"), ("features", "8"));
        Perturb(method, 403);
        Assert.Equal(weights.Config.Layers * 6, method.Parameters.Count);   // q, k, v LoRA pairs
        int[] document = new Rng(404).Ints(12, 0, Vocab);
        int[] targets = Shifted(document);
        targets[4] = -100;
        CheckGradients(method, document, targets, 405, "Performer");
    }

    private static float[] CausalSoftmax(float[] q, float[] k, float[] v, int t, int heads, int kvHeads, int dim)
    {
        var o = new float[t * heads * dim];
        int group = heads / kvHeads;
        for (int i = 0; i < t; i++)
            for (int h = 0; h < heads; h++)
            {
                int g = h / group;
                var s = new double[i + 1];
                for (int j = 0; j <= i; j++)
                {
                    double dot = 0;
                    for (int e = 0; e < dim; e++) dot += q[(i * heads + h) * dim + e] * k[(j * kvHeads + g) * dim + e];
                    s[j] = Math.Exp(dot / Math.Sqrt(dim));
                }
                double z = s.Sum();
                for (int e = 0; e < dim; e++)
                {
                    double acc = 0;
                    for (int j = 0; j <= i; j++) acc += s[j] * v[(j * kvHeads + g) * dim + e];
                    o[(i * heads + h) * dim + e] = (float)(acc / z);
                }
            }
        return o;
    }

    [Fact]
    public void ManyFeaturesApproximateSoftmaxAttention()
    {
        int t = 8, heads = 2, kvHeads = 1, dim = 4;
        var rng = new Rng(410);
        var q = rng.Normal(t * heads * dim, 0.5f);
        var k = rng.Normal(t * kvHeads * dim, 0.5f);
        var v = rng.Normal(t * kvHeads * dim);
        var exact = CausalSoftmax(q, k, v, t, heads, kvHeads, dim);
        var many = new FavorAttention(1, 16384, dim, seed: 411);
        var approx = many.Forward(0, q, k, v, t, heads, kvHeads, new FavorAttention.State(kvHeads, many.Features, dim));
        double worst = exact.Zip(approx, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(worst < 0.05, $"FAVOR+ with 16384 features is off softmax attention by {worst:G4}");
        var few = new FavorAttention(1, 2, dim, seed: 411);
        var rough = few.Forward(0, q, k, v, t, heads, kvHeads, new FavorAttention.State(kvHeads, few.Features, dim));
        Assert.True(exact.Zip(rough, (a, b) => Math.Abs(a - b)).Max() > worst, "two features approximate worse");
    }

    [Fact]
    public void TheRecurrentStateEqualsTheParallelCausalFormExactly()
    {
        int t = 11, heads = 4, kvHeads = 2, dim = 4;
        var rng = new Rng(420);
        var q = rng.Normal(t * heads * dim);
        var k = rng.Normal(t * kvHeads * dim);
        var v = rng.Normal(t * kvHeads * dim);
        var favor = new FavorAttention(2, 16, dim, seed: 421);
        var parallel = favor.Forward(1, q, k, v, t, heads, kvHeads, new FavorAttention.State(kvHeads, 16, dim));
        var state = new FavorAttention.State(kvHeads, 16, dim);
        var recurrent = new List<float>();
        foreach (var (start, count) in new[] { (0, 3), (3, 1), (4, 7) })
            recurrent.AddRange(favor.Forward(1, q[(start * heads * dim)..((start + count) * heads * dim)], k[(start * kvHeads * dim)..((start + count) * kvHeads * dim)],
                v[(start * kvHeads * dim)..((start + count) * kvHeads * dim)], count, heads, kvHeads, state));
        Assert.Equal(parallel, recurrent.ToArray());
        Assert.Equal(kvHeads * (16 * dim + 16) * sizeof(float), state.Bytes);
    }

    [Fact]
    public void SessionLogProbsEqualTheTrainingForwardInConstantMemory()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 430);
        var model = new LlamaModel(weights);
        using var method = Create(model, 431, ("rank", "2"), ("features", "16"), ("range", "60"));
        Perturb(method, 432);
        int[] ids = new Rng(433).Ints(50, 0, Vocab);
        var expected = LogProbsOf(LinearLogits(method, ids), ids);
        using var session = method.OpenSession();
        AssertClose(expected, Stream(session, ids), 1e-4, "Performer session vs training forward");
        var c = weights.Config;
        long bytes = (long)c.Layers * c.KvHeads * (16 * c.HeadDim + 16) * sizeof(float);
        Assert.Equal(bytes, session.KvBytes);
        session.Feed(new Rng(434).Ints(20, 0, Vocab));
        Assert.Equal(bytes, session.KvBytes);
        Assert.True(session.OutOfTrainedRange);
        Assert.Equal(Vocab, session.LastLogits.Length);
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 440);
        var model = new LlamaModel(weights);
        string folder = TempFolder("performer");
        string foreign = TempFolder("performer-foreign");
        try
        {
            using var trained = Create(model, 441, ("rank", "2"), ("features", "8"), ("feature-seed", "5"));
            Perturb(trained, 442);
            trained.SaveAdapter(folder, "tiny-base");
            int[] document = new Rng(443).Ints(20, 0, Vocab);
            int[] targets = Shifted(document);
            using var loaded = Create(model, 999, ("rank", "2"), ("features", "8"), ("feature-seed", "5"));
            Assert.NotEqual(trained.Loss(document, targets), loaded.Loss(document, targets));
            loaded.LoadAdapter(folder);
            Assert.Equal(trained.Loss(document, targets), loaded.Loss(document, targets));
            var recorded = TrainableMethods.ReadAdapterMethod(folder)!.Value;
            Assert.Equal("performer", recorded.Method);
            Assert.Equal("5", recorded.Options["feature-seed"]);
            CheckRebuiltFromFolder(trained, folder, document);
            using var otherFeatures = Create(model, 444, ("rank", "2"), ("features", "8"), ("feature-seed", "6"));
            Assert.Throws<ModelFormatException>(() => otherFeatures.LoadAdapter(folder));
            using (var longnet = new LongNetMethod(model, new MethodOptions("longnet", new Dictionary<string, string> { ["rank"] = "2" }), 445))
                longnet.SaveAdapter(foreign);
            Assert.Contains("longnet", Assert.Throws<ModelFormatException>(() => loaded.LoadAdapter(foreign)).Message);
        }
        finally
        {
            Directory.Delete(folder, true);
            Directory.Delete(foreign, true);
        }
    }

    [Fact]
    public void TrainingLowersTheLossAndReplicasShareTheFeatures()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 450);
        var model = new LlamaModel(weights);
        using var method = Create(model, 451, ("rank", "4"), ("features", "16"));
        var (first, last) = Train(method, RepeatedPattern(452, 7, 40), steps: 30, lr: 2e-2f);
        Assert.True(last < 0.8 * first, $"loss went from {first:F3} to {last:F3}");
        using var replica = (PerformerMethod)method.CreateReplica()!;
        Assert.Equal(method.Options, replica.Options);
        int[] document = new Rng(453).Ints(10, 0, Vocab);
        replica.Model.CopyParametersFrom(method.Model);
        Assert.Equal(method.Loss(document, Shifted(document)), replica.Loss(document, Shifted(document)));
    }

    [Fact]
    public void BadOptionsAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 460);
        var model = new LlamaModel(weights);
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("features", "0")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("rank", "0")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("range", "1")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("feature-seed", "x")));
        Assert.Throws<MethodOptionException>(() => TrainableMethods.Create("performer:heads=2", model, 0));
    }
}
