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

/// <summary>LongLoRA: S2-Attn in training, LoRA+ parameters, full attention at inference.</summary>
public sealed class LongLoraTests
{
    private static LongLoraMethod Create(LlamaModel model, int seed, params (string Key, string Value)[] options) =>
        (LongLoraMethod)LongLoraMethod.Descriptor.Create(model, new MethodOptions(LongLoraMethod.MethodName, options.ToDictionary(o => o.Key, o => o.Value)), seed);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AccumulateMatchesFiniteDifferencesOnEveryParameter(bool tied)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(tied), seed: 201);
        var model = new LlamaModel(weights);
        using var method = Create(model, 202, ("rank", "2"), ("alpha", "2"), ("group", "4"));
        Perturb(method, 203);
        var c = weights.Config;
        // Embedding, per layer two norms and q,k,v,o LoRA pairs, the final norm.
        Assert.Equal(1 + c.Layers * (2 + 8) + 1, method.Parameters.Count);
        int[] document = new Rng(204).Ints(14, 0, Vocab);
        int[] targets = Shifted(document);
        targets[2] = -100;
        targets[7] = -100;
        Assert.IsType<AttentionMask>(method.TrainingMask(0, 13));
        Assert.Equal(4, method.TrainingMask(0, 13).GroupSize);
        CheckGradients(method, document, targets, 205, tied ? "LongLoRA (tied head)" : "LongLoRA");
    }

    [Fact]
    public void OneGroupCoveringTheInputIsFullAttentionAndSmallerGroupsAreNot()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 210);
        var model = new LlamaModel(weights);
        int[] document = new Rng(211).Ints(17, 0, Vocab);
        int[] targets = Shifted(document);
        // Fresh (B = 0, norms and embedding copied): the base model itself, through the engine's own full attention.
        using var fresh = Create(model, 212, ("group", "16"));
        double baseLoss;
        using (var tape = new Tape(weights.Accelerator))
        using (tape.NoGrad())
            baseLoss = model.Loss(tape, document[..^1], targets).Value.ToArray()[0];
        Assert.Equal(baseLoss, fresh.Loss(document, targets), 5);
        // Trained weights: group >= length equals the causal forward of the same weights; a smaller group does not.
        using var wide = Create(model, 212, ("group", "16"));
        using var narrow = Create(model, 212, ("group", "4"));
        Perturb(wide, 213);
        Perturb(narrow, 213);
        var full = LogProbsOf(FinetunedLogits(wide, document[..^1], _ => AttentionMask.CausalMask()), document[..^1]);
        var s2Wide = LogProbsOf(FinetunedLogits(wide, document[..^1], l => wide.TrainingMask(l, 16)), document[..^1]);
        var s2Narrow = LogProbsOf(FinetunedLogits(narrow, document[..^1], l => narrow.TrainingMask(l, 16)), document[..^1]);
        AssertClose(full, s2Wide, 1e-5, "group 16 over 16 tokens");
        Assert.True(MaxDifference(full, s2Narrow) > 1e-2, "groups of 4 must differ from full attention");
        // The default group is a quarter of the input.
        using var auto = Create(model, 212);
        Assert.Equal(4, auto.GroupFor(16));
        Assert.Equal(25, auto.GroupFor(100));
    }

    [Fact]
    public void TheMaskSplitsUnshiftedHeadsAtGroupsAndShiftedHeadsHalfAGroupLater()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 220);
        using var method = Create(new LlamaModel(weights), 221, ("group", "4"));
        var mask = method.TrainingMask(1, 12);
        int heads = weights.Config.Heads;   // 4: heads 0, 1 unshifted; 2, 3 shifted by 2
        for (int h = 0; h < heads; h++)
        {
            bool shifted = h >= heads / 2;
            // Group 0 of an unshifted head ([0, 4)) sees nothing of group 1 ([4, 8)), nor a shifted head's [0, 2) of [2, 6).
            Assert.False(mask.IsVisible(h, heads, 1, 4, 12, 12));
            Assert.False(mask.IsVisible(h, heads, 1, 2, 12, 12));
            // The first token of group 1 sees the last of group 0 only through a shifted head (its group is [2, 6)).
            Assert.Equal(shifted, mask.IsVisible(h, heads, 4, 3, 12, 12));
            Assert.Equal(shifted, mask.IsVisible(h, heads, 5, 2, 12, 12));
            Assert.False(mask.IsVisible(h, heads, 5, 1, 12, 12));
            Assert.Equal(!shifted, mask.IsVisible(h, heads, 7, 4, 12, 12));
            Assert.True(mask.IsVisible(h, heads, 7, 6, 12, 12));
            // Token 6 of a shifted head starts a new group [6, 10): it no longer sees 5.
            Assert.Equal(!shifted, mask.IsVisible(h, heads, 6, 5, 12, 12));
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InTheForwardOnlyTheShiftedHeadsCarryAcrossTheGroupBoundary(bool keepShiftedHeads)
    {
        // One layer; the output projection of one half of the heads zeroed: the first token of group 1 depends on
        // the last token of group 0 exactly when the shifted heads are kept, and never on token 1 (outside both groups).
        var config = GradCheck.TinyConfig() with { Layers = 1 };
        using var weights = GradCheck.RandomWeights(config, seed: 230);
        int heads = config.Heads, hd = config.HeadDim;
        var wo = weights.Layers[0].Wo.Span;
        int columns = heads * hd;
        for (int row = 0; row < config.Dim; row++)
            for (int h = 0; h < heads; h++)
                if ((h >= heads / 2) != keepShiftedHeads)
                    for (int e = 0; e < hd; e++) wo[row * columns + h * hd + e] = 0;
        using var method = Create(new LlamaModel(weights), 231, ("group", "4"));
        int[] ids = new Rng(232).Ints(12, 0, Vocab);
        float[] Row4(int[] x) => FinetunedLogits(method, x, l => method.TrainingMask(l, 12)).AsSpan(4 * Vocab, Vocab).ToArray();
        var reference = Row4(ids);
        var changed3 = (int[])ids.Clone();
        changed3[3] = (ids[3] + 5) % Vocab;
        var changed1 = (int[])ids.Clone();
        changed1[1] = (ids[1] + 5) % Vocab;
        double Diff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        Assert.Equal(0, Diff(reference, Row4(changed1)), 6);
        if (keepShiftedHeads) Assert.True(Diff(reference, Row4(changed3)) > 1e-4, "a shifted head carries token 3 to token 4");
        else Assert.Equal(0, Diff(reference, Row4(changed3)), 6);
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 240);
        var model = new LlamaModel(weights);
        string folder = TempFolder("longlora");
        string foreign = TempFolder("longlora-foreign");
        try
        {
            using var trained = Create(model, 241, ("rank", "2"), ("scale", "2"));
            Perturb(trained, 242);
            trained.SaveAdapter(folder, "tiny-base");
            int[] document = new Rng(243).Ints(20, 0, Vocab);
            int[] targets = Shifted(document);
            using var loaded = Create(model, 999, ("rank", "2"), ("scale", "2"));
            Assert.NotEqual(trained.Loss(document, targets), loaded.Loss(document, targets));
            loaded.LoadAdapter(folder);
            for (int i = 0; i < trained.Parameters.Count; i++)
                Assert.Equal(trained.Parameters[i].Parameter.Value.ToArray(), loaded.Parameters[i].Parameter.Value.ToArray());
            Assert.Equal(trained.Loss(document, targets), loaded.Loss(document, targets));
            var recorded = TrainableMethods.ReadAdapterMethod(folder)!.Value;
            Assert.Equal("longlora", recorded.Method);
            Assert.Equal("2", recorded.Options["rank"]);
            Assert.Equal("yes", recorded.Options["plus"]);
            EnsureRegistered(LongLoraMethod.Descriptor);
            CheckRebuiltFromFolder(trained, folder, document);

            // Other options, another method's adapter: refused with a typed error.
            using var otherRank = Create(model, 244, ("rank", "4"), ("scale", "2"));
            Assert.Contains("rank=2", Assert.Throws<ModelFormatException>(() => otherRank.LoadAdapter(folder)).Message);
            using var loraOnly = Create(model, 244, ("rank", "2"), ("scale", "2"), ("plus", "no"));
            Assert.Throws<ModelFormatException>(() => loraOnly.LoadAdapter(folder));
            using (var pi = new RopeFinetuneMethod(RopeFinetuneScaling.Pi, model, new MethodOptions("pi-finetune", new Dictionary<string, string> { ["rank"] = "2" }), 245))
                pi.SaveAdapter(foreign);
            Assert.Contains("pi-finetune", Assert.Throws<ModelFormatException>(() => loaded.LoadAdapter(foreign)).Message);
            Assert.Throws<ModelFormatException>(() => loaded.LoadAdapter(Path.Combine(folder, "missing")));
        }
        finally
        {
            Directory.Delete(folder, true);
            Directory.Delete(foreign, true);
        }
    }

    [Fact]
    public void SessionIsFullAttentionThroughTheFineTunedWeightsAndMarksThePiRange()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 250);
        var model = new LlamaModel(weights);
        using var method = Create(model, 251, ("rank", "2"), ("scale", "2"));
        Perturb(method, 252);
        Assert.Equal(128, method.TrainedRange);
        int[] ids = new Rng(253).Ints(100, 0, Vocab);
        var (mergedWeights, merged) = Merged(method);
        using (mergedWeights)
        {
            var expected = LogProbsOf(ModelLogits(merged, ids), ids);
            using var session = method.OpenSession();
            var streamed = Stream(session, ids);
            AssertClose(expected, streamed, 2e-4, "LongLoRA session vs merged full attention");
            // The same weights through the training forward with full masks.
            AssertClose(expected, LogProbsOf(FinetunedLogits(method, ids, _ => AttentionMask.CausalMask()), ids), 2e-4, "training forward, full attention");
            Assert.False(session.OutOfTrainedRange);   // 100 tokens: inside 2 x 64
            session.Feed(new Rng(254).Ints(28, 0, Vocab));
            Assert.False(session.OutOfTrainedRange);   // 128 tokens: largest distance 127
            session.Feed([1]);
            Assert.True(session.OutOfTrainedRange);
            Assert.Equal(129, session.TokensSeen);
            Assert.Equal(Vocab, session.LastLogits.Length);
        }
    }

    [Theory]
    [InlineData("pi", "pi")]
    [InlineData("yarn", "yarn")]
    [InlineData("ntk", "ntk")]
    public void AFreshLongLoraWithAScaleReadsLikeTheInferenceScalingMethod(string rope, string inferenceMethod)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 255);
        var model = new LlamaModel(weights);
        using var method = Create(model, 256, ("scale", "4"), ("rope", rope));
        int[] ids = new Rng(257).Ints(40, 0, Vocab);
        using var factory = MethodRegistry.Create(MethodRegistry.Find(inferenceMethod), new Dictionary<string, string> { ["factor"] = "4" }, new MethodContext(model));
        using var reference = factory.Create();
        var expected = reference.Feed(ids);
        using var session = method.OpenSession();
        AssertClose(expected, Stream(session, ids), 1e-4, $"longlora rope={rope} (fresh) vs {inferenceMethod}");
        using var full = new FullAttentionSession(model);
        Assert.True(MaxDifference(expected, full.Feed(ids)) > 1e-3, "the scale must change the numbers");
    }

    [Fact]
    public void TrainingLowersTheLossAndReplicasShareTheSettings()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 260);
        var model = new LlamaModel(weights);
        using var method = Create(model, 261, ("rank", "4"), ("group", "8"));
        var (first, last) = Train(method, RepeatedPattern(262, 7, 40), steps: 30, lr: 2e-2f);
        Assert.True(last < 0.5 * first, $"loss went from {first:F3} to {last:F3}");
        using var replica = (LongLoraMethod)method.CreateReplica()!;
        Assert.Equal(method.Options, replica.Options);
        Assert.Equal(method.Parameters.Select(p => p.Parameter.Name), replica.Parameters.Select(p => p.Parameter.Name));
        Assert.Equal(8, replica.GroupSize);
    }

    [Fact]
    public void BadOptionsAndDocumentsAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 270);
        var model = new LlamaModel(weights);
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("group", "1")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("rank", "0")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("scale", "0.5")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("plus", "maybe")));
        Assert.Throws<MethodOptionException>(() => Create(model, 0, ("rope", "abf")));
        using var scaledWeights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { RopeScaling = new RopeScaling(RopeScalingKind.Linear, 2, 64) }, seed: 273);
        Assert.Contains("scale", Assert.Throws<MethodOptionException>(() => Create(new LlamaModel(scaledWeights), 0, ("scale", "2"))).Message);
        using var method = Create(model, 271);
        Assert.Throws<ArgumentException>(() => method.Accumulate([3], [], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([3, 4, 5], [4], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([3, 4, 5], [-100, -100], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([3, 40, 5], [40, 5], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([3, 4, 5], [4, 37], 0));
        int[] tooLong = new Rng(272).Ints(66, 0, Vocab);   // 65 inputs > the 64-token window (scale 1)
        Assert.Contains("trained range", Assert.Throws<ArgumentException>(() => method.Accumulate(tooLong, Shifted(tooLong), 0)).Message);
    }
}
