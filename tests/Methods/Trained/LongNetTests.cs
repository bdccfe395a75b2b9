using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using static UioLlm.Tests.Methods.Trained.TrainedMethodSupport;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>LongNet: dilated attention in training and over the stream, LoRA on q and v.</summary>
public sealed class LongNetTests
{
    private static LongNetMethod Create(LlamaModel model, int seed, params (string Key, string Value)[] options) =>
        (LongNetMethod)LongNetMethod.Descriptor.Create(model, new MethodOptions(LongNetMethod.MethodName, options.ToDictionary(o => o.Key, o => o.Value)), seed);

    private static float[] DilatedLogits(LongNetMethod method, int[] ids)
    {
        using var tape = new Tape(method.Base.Accelerator);
        using var _ = tape.NoGrad();
        return method.Model.Logits(tape, ids, (t, l, q, k, v, s) => method.Attention.Attend(t, q, k, v)).Value.ToArray();
    }

    [Fact]
    public void AccumulateMatchesFiniteDifferencesOnEveryParameter()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 301);
        var model = new LlamaModel(weights);
        using var method = Create(model, 302, ("rank", "2"), ("alpha", "2"), ("segment", "4"), ("ratio", "2"), ("levels", "2"));
        Perturb(method, 303);
        Assert.Equal(weights.Config.Layers * 4, method.Parameters.Count);   // q and v LoRA pairs
        Assert.All(method.Parameters, p => Assert.True(p.Decay));
        int[] document = new Rng(304).Ints(14, 0, Vocab);
        int[] targets = Shifted(document);
        targets[3] = -100;
        CheckGradients(method, document, targets, 305, "LongNet");
    }

    [Fact]
    public void OneLevelCoveringTheInputIsFullCausalAttentionAndDilationIsNot()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 310);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(311).Ints(16, 0, Vocab);
        using var wide = Create(model, 312, ("segment", "16"), ("levels", "1"));
        using var dilated = Create(model, 312, ("segment", "4"), ("levels", "3"));
        Perturb(wide, 313);
        Perturb(dilated, 313);
        var full = LogProbsOf(FinetunedLogits(wide, ids, _ => AttentionMask.CausalMask()), ids);
        AssertClose(full, LogProbsOf(DilatedLogits(wide, ids), ids), 1e-5, "one level, w >= length, r = 1");
        Assert.True(MaxDifference(full, LogProbsOf(DilatedLogits(dilated, ids), ids)) > 1e-3, "dilated levels must differ from full attention");
    }

    [Fact]
    public void ATokenOutsideEveryPatternOfAQueryIsNotAttended()
    {
        var pattern = new DilatedAttention(4, 2, 2);
        // Query 6: level 0 reads [4, 6]; level 1 (segments of 8, every 2nd token) reads 0, 2, 4, 6 for even-offset heads.
        Assert.Equal(2, pattern.Multiplicity(0, 6, 4));
        Assert.Equal(2, pattern.Multiplicity(0, 6, 6));
        Assert.Equal(1, pattern.Multiplicity(0, 6, 5));
        Assert.Equal(1, pattern.Multiplicity(0, 6, 2));
        Assert.Equal(0, pattern.Multiplicity(1, 6, 2));   // odd offset: query 6 is not kept at level 1
        for (int h = 0; h < 4; h++)
        {
            Assert.Equal(0, pattern.Multiplicity(h, 6, 1));
            Assert.Equal(0, pattern.Multiplicity(h, 6, 3));
            Assert.Equal(0, pattern.Multiplicity(h, 6, 7));   // causal
            Assert.Equal(0, pattern.Multiplicity(h, 9, 6));   // another segment at every level
        }
        Assert.Equal(1, pattern.Multiplicity(1, 7, 1));      // odd offset heads read odd positions at level 1
        Assert.Equal(8, pattern.FirstKey(9));                 // the top-level segment [8, 16) bounds every level's reach
        Assert.Equal(0, pattern.FirstKey(7));
        // In the forward of a one-layer model, row 6 depends on token 2 (even heads) and not on token 1 or 3.
        var config = GradCheck.TinyConfig() with { Layers = 1 };
        using var weights = GradCheck.RandomWeights(config, seed: 320);
        using var method = Create(new LlamaModel(weights), 321, ("segment", "4"), ("ratio", "2"), ("levels", "2"));
        Perturb(method, 322);
        int[] ids = new Rng(323).Ints(10, 0, Vocab);
        float[] Row6(int[] x) => DilatedLogits(method, x).AsSpan(6 * Vocab, Vocab).ToArray();
        double Diff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        var reference = Row6(ids);
        int[] Changed(int at) { var c = (int[])ids.Clone(); c[at] = (ids[at] + 5) % Vocab; return c; }
        Assert.Equal(0, Diff(reference, Row6(Changed(1))), 6);
        Assert.Equal(0, Diff(reference, Row6(Changed(3))), 6);
        Assert.Equal(0, Diff(reference, Row6(Changed(8))), 6);
        Assert.True(Diff(reference, Row6(Changed(2))) > 1e-5, "token 2 is read by the even heads at level 1");
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 330);
        var model = new LlamaModel(weights);
        string folder = TempFolder("longnet");
        string foreign = TempFolder("longnet-foreign");
        try
        {
            using var trained = Create(model, 331, ("rank", "2"), ("segment", "4"));
            Perturb(trained, 332);
            trained.SaveAdapter(folder, "tiny-base");
            int[] document = new Rng(333).Ints(20, 0, Vocab);
            int[] targets = Shifted(document);
            using var loaded = Create(model, 999, ("rank", "2"), ("segment", "4"));
            Assert.NotEqual(trained.Loss(document, targets), loaded.Loss(document, targets));
            loaded.LoadAdapter(folder);
            Assert.Equal(trained.Loss(document, targets), loaded.Loss(document, targets));
            var recorded = TrainableMethods.ReadAdapterMethod(folder)!.Value;
            Assert.Equal("longnet", recorded.Method);
            Assert.Equal("4", recorded.Options["segment"]);
            CheckRebuiltFromFolder(trained, folder, document);
            using var otherSegment = Create(model, 334, ("rank", "2"), ("segment", "8"));
            Assert.Throws<ModelFormatException>(() => otherSegment.LoadAdapter(folder));
            using (var performer = new PerformerMethod(model, new MethodOptions("performer", new Dictionary<string, string> { ["rank"] = "2" }), 335))
                performer.SaveAdapter(foreign);
            Assert.Contains("performer", Assert.Throws<ModelFormatException>(() => loaded.LoadAdapter(foreign)).Message);
        }
        finally
        {
            Directory.Delete(folder, true);
            Directory.Delete(foreign, true);
        }
    }

    [Fact]
    public void SessionLogProbsEqualTheTrainingForward()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 340);
        var model = new LlamaModel(weights);
        using var method = Create(model, 341, ("rank", "2"), ("segment", "4"), ("levels", "3"), ("range", "80"));
        Perturb(method, 342);
        int[] ids = new Rng(343).Ints(70, 0, Vocab);
        var expected = LogProbsOf(DilatedLogits(method, ids), ids);
        using var session = method.OpenSession();
        AssertClose(expected, Stream(session, ids), 1e-4, "LongNet session vs training forward");
        Assert.Equal(70, session.TokensSeen);
        var c = weights.Config;
        Assert.Equal(70L * c.Layers * 2 * c.KvHeads * c.HeadDim * sizeof(float), session.KvBytes);
        Assert.False(session.OutOfTrainedRange);
        session.Feed(new Rng(344).Ints(11, 0, Vocab));
        Assert.True(session.OutOfTrainedRange);
        // The training loss is the mean cross-entropy of the same forward.
        int[] document = ids[..21];
        double mean = -LogProbsOf(DilatedLogits(method, document), document).Skip(1).Average();
        Assert.Equal(mean, method.Loss(document, Shifted(document)), 4);
    }

    [Fact]
    public void TrainingLowersTheLossAndReplicasShareTheSettings()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 350);
        var model = new LlamaModel(weights);
        using var method = Create(model, 351, ("rank", "4"), ("segment", "8"));
        var (first, last) = Train(method, RepeatedPattern(352, 7, 40), steps: 30, lr: 2e-2f);
        Assert.True(last < 0.7 * first, $"loss went from {first:F3} to {last:F3}");
        using var replica = (LongNetMethod)method.CreateReplica()!;
        Assert.Equal(method.Options, replica.Options);
        Assert.Equal(8, replica.Attention.Segment);
    }

    [Fact]
    public void BadOptionsAndDocumentsAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 360);
        var model = new LlamaModel(weights);
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("segment", "0")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("ratio", "1")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("levels", "0")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("rank", "0")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("range", "1")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("segment", "1048576"), ("ratio", "64"), ("levels", "16")));
        using var method = Create(model, 361, ("range", "10"));
        Assert.Throws<ArgumentException>(() => method.Accumulate([3], [], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([3, 4, 5], [-100, -100], 0));
        int[] tooLong = new Rng(362).Ints(12, 0, Vocab);
        Assert.Contains("trained range", Assert.Throws<ArgumentException>(() => method.Accumulate(tooLong, Shifted(tooLong), 0)).Message);
    }
}
