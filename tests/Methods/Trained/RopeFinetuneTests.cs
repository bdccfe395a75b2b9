using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using static UioLlm.Tests.Methods.Trained.TrainedMethodSupport;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>LoRA fine-tuning under PI, YaRN and a raised base (ABF): the inference methods' tables, trained.</summary>
public sealed class RopeFinetuneTests
{
    private static RopeFinetuneMethod Create(RopeFinetuneScaling scaling, LlamaModel model, int seed, params (string Key, string Value)[] options)
    {
        var descriptor = RopeFinetuneMethod.Descriptors.Single(d => d.Name == RopeFinetuneMethod.NameOf(scaling));
        var o = new MethodOptions(descriptor.Name, options.ToDictionary(x => x.Key, x => x.Value));
        var method = (RopeFinetuneMethod)descriptor.Create(model, o, seed);
        o.RejectUnknown(descriptor.Options.Select(x => x.Name));
        return method;
    }

    [Theory]
    [InlineData(RopeFinetuneScaling.Pi)]
    [InlineData(RopeFinetuneScaling.Yarn)]
    [InlineData(RopeFinetuneScaling.Abf)]
    public void AccumulateMatchesFiniteDifferencesOnEveryParameter(RopeFinetuneScaling scaling)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 300);
        using var method = Create(scaling, new LlamaModel(weights), 301, ("rank", "2"), ("alpha", "2"), ("factor", "2"));
        Perturb(method, 302);
        Assert.Equal(weights.Config.Layers * 8, method.Parameters.Count);   // q,k,v,o LoRA pairs only
        Assert.All(method.Parameters, p => Assert.True(p.Decay));
        int[] document = new Rng(303).Ints(16, 0, Vocab);
        int[] targets = Shifted(document);
        targets[0] = -100;
        CheckGradients(method, document, targets, 304, RopeFinetuneMethod.NameOf(scaling));
    }

    [Theory]
    [InlineData(RopeFinetuneScaling.Pi, "pi")]
    [InlineData(RopeFinetuneScaling.Yarn, "yarn")]
    [InlineData(RopeFinetuneScaling.Abf, "abf")]
    public void AFreshFineTuneIsTheInferenceScalingMethod(RopeFinetuneScaling scaling, string inferenceMethod)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 310);
        var model = new LlamaModel(weights);
        var given = scaling switch
        {
            RopeFinetuneScaling.Abf => new Dictionary<string, string> { ["theta"] = "300" },
            RopeFinetuneScaling.Yarn => new Dictionary<string, string> { ["factor"] = "4", ["beta-fast"] = "16", ["beta-slow"] = "2" },
            _ => new Dictionary<string, string> { ["factor"] = "4" },
        };
        using var method = Create(scaling, model, 311, [.. given.Select(p => (p.Key, p.Value))]);
        int[] ids = new Rng(312).Ints(50, 0, Vocab);
        using var factory = MethodRegistry.Create(MethodRegistry.Find(inferenceMethod), given, new MethodContext(model));
        using var reference = factory.Create();
        var expected = reference.Feed(ids);
        using var session = method.OpenSession();
        AssertClose(expected, Stream(session, ids), 1e-4, $"{method.Name} session (B = 0) vs {inferenceMethod}");
        AssertClose(expected, LogProbsOf(FinetunedLogits(method, ids, l => method.TrainingMask(l, ids.Length)), ids), 1e-4, $"{method.Name} training forward (B = 0) vs {inferenceMethod}");
        // The scaled table matters (the base's own RoPE gives other numbers), and so do trained LoRA weights.
        using (var full = new FullAttentionSession(model))
            Assert.True(MaxDifference(expected, full.Feed(ids)) > 1e-3, "scaled RoPE must differ from the base's");
        Perturb(method, 313);
        using var trained = method.OpenSession();
        Assert.True(MaxDifference(expected, trained.Feed(ids)) > 1e-3, "trained LoRA must change the numbers");
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 320);
        var model = new LlamaModel(weights);
        string folder = TempFolder("yarn-finetune");
        try
        {
            using var trained = Create(RopeFinetuneScaling.Yarn, model, 321, ("rank", "3"), ("factor", "2"));
            Perturb(trained, 322);
            trained.SaveAdapter(folder);
            using var loaded = Create(RopeFinetuneScaling.Yarn, model, 323, ("rank", "3"), ("factor", "2"));
            loaded.LoadAdapter(folder);
            for (int i = 0; i < trained.Parameters.Count; i++)
                Assert.Equal(trained.Parameters[i].Parameter.Value.ToArray(), loaded.Parameters[i].Parameter.Value.ToArray());
            int[] document = new Rng(324).Ints(30, 0, Vocab);
            Assert.Equal(trained.Loss(document, Shifted(document)), loaded.Loss(document, Shifted(document)));
            var recorded = TrainableMethods.ReadAdapterMethod(folder)!.Value;
            Assert.Equal("yarn-finetune", recorded.Method);
            Assert.Equal(["alpha", "beta-fast", "beta-slow", "factor", "rank"], recorded.Options.Keys.Order().ToArray());
            EnsureRegistered(YarnFinetune.Descriptor);
            CheckRebuiltFromFolder(trained, folder, document);

            using var pi = Create(RopeFinetuneScaling.Pi, model, 325, ("rank", "3"), ("factor", "2"));
            Assert.Contains("yarn-finetune", Assert.Throws<ModelFormatException>(() => pi.LoadAdapter(folder)).Message);
            using var otherFactor = Create(RopeFinetuneScaling.Yarn, model, 326, ("rank", "3"), ("factor", "4"));
            Assert.Contains("factor=2", Assert.Throws<ModelFormatException>(() => otherFactor.LoadAdapter(folder)).Message);
            using var longLora = (LongLoraMethod)LongLoraMethod.Descriptor.Create(model, new MethodOptions("longlora"), 327);
            Assert.Throws<ModelFormatException>(() => longLora.LoadAdapter(folder));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Fact]
    public void AnAbfAdapterWithTheDefaultBaseRebuildsFromItsFolder()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 328);
        var model = new LlamaModel(weights);
        string folder = TempFolder("abf-finetune");
        try
        {
            using var trained = Create(RopeFinetuneScaling.Abf, model, 329);
            Perturb(trained, 330);
            trained.SaveAdapter(folder);
            Assert.Equal("500000", TrainableMethods.ReadAdapterMethod(folder)!.Value.Options["theta"]);   // 50 x the base's 10,000
            EnsureRegistered(AbfFinetune.Descriptor);
            CheckRebuiltFromFolder(trained, folder, new Rng(331).Ints(40, 0, Vocab));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Theory]
    [InlineData(RopeFinetuneScaling.Pi)]
    [InlineData(RopeFinetuneScaling.Abf)]
    public void SessionIsFullAttentionThroughTheLoraWeightsAndMarksTheRange(RopeFinetuneScaling scaling)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 330);
        var model = new LlamaModel(weights);
        using var method = Create(scaling, model, 331, ("rank", "2"), ("factor", "2"));
        Perturb(method, 332);
        int[] ids = new Rng(333).Ints(90, 0, Vocab);
        var (mergedWeights, merged) = Merged(method);
        using (mergedWeights)
        {
            var expected = LogProbsOf(ModelLogits(merged, ids), ids);
            using var session = method.OpenSession();
            AssertClose(expected, Stream(session, ids), 2e-4, $"{method.Name} session vs merged full attention");
            Assert.False(session.OutOfTrainedRange);
            session.Feed(new Rng(334).Ints(40, 0, Vocab));   // 130 tokens: distance 129 >= 2 x 64
            Assert.True(session.OutOfTrainedRange);
        }
    }

    [Fact]
    public void TrainingPastTheBaseWindowLowersTheLoss()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 340);
        var model = new LlamaModel(weights);
        using var method = Create(RopeFinetuneScaling.Pi, model, 341, ("rank", "4"), ("factor", "2"));
        var (first, last) = Train(method, RepeatedPattern(342, 9, 100), steps: 30, lr: 2e-2f);
        Assert.True(last < 0.7 * first, $"loss went from {first:F3} to {last:F3}");
        using var replica = (RopeFinetuneMethod)method.CreateReplica()!;
        Assert.Equal(method.Options, replica.Options);
        Assert.Equal(RopeFinetuneScaling.Pi, replica.Scaling);
    }

    [Fact]
    public void BadOptionsAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 350);
        var model = new LlamaModel(weights);
        Assert.Throws<MethodOptionException>(() => Create(RopeFinetuneScaling.Pi, model, 0, ("factor", "0.5")));
        Assert.Throws<MethodOptionException>(() => Create(RopeFinetuneScaling.Abf, model, 0, ("theta", "1")));
        Assert.Throws<MethodOptionException>(() => Create(RopeFinetuneScaling.Pi, model, 0, ("theta", "500000")));
        Assert.Throws<MethodOptionException>(() => Create(RopeFinetuneScaling.Yarn, model, 0, ("rank", "-1")));
        Assert.Equal(["pi-finetune", "yarn-finetune", "abf-finetune"], RopeFinetuneMethod.Descriptors.Select(d => d.Name).ToArray());
        Assert.Equal(PiFinetune.Descriptor, RopeFinetuneMethod.Descriptors[0]);
    }
}
