using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Methods.AutoCompressor;
using UioLlm.Model.Methods.Icae;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods.AutoCompressor;
using UioLlm.Training.Methods.Icae;
using static UioLlm.Tests.Methods.Trained.TrainedMethodChecks;

namespace UioLlm.Tests.Methods.Trained;

public sealed class IcaeTests
{
    private static IcaeConfig Small(IcaeObjective objective = IcaeObjective.Both) => new(Chunk: 5, Slots: 2, Rank: 2, Alpha: 4f, Objective: objective);

    // 16 tokens: 15 inputs = 3 chunks of 5.
    private static readonly int[] Document = [3, 17, 5, 30, 8, 8, 21, 2, 14, 9, 33, 1, 26, 7, 12, 19];

    private static void Randomise(IcaeMethod method, int seed)
    {
        RandomiseLoraB(method, seed);
        var rng = new Rng(seed + 1000);
        method.Model.MemoryEmbedding.Value.CopyFrom(rng.Normal(method.Model.MemoryEmbedding.Value.Length));
    }

    [Fact]
    public void GradientsOfEveryParameterMatchFiniteDifferences()
    {
        var (weights, model) = TinyBase(50);
        using var _ = weights;
        using var method = new IcaeMethod(model, Small(IcaeObjective.Both), seed: 1);
        Randomise(method, 2);
        var targets = Targets(Document, 1, 8);
        GradientsMatchFiniteDifferences(method, Document, targets, () => method.Evaluate(Document, targets).Loss, "icae (both)", eps: 1e-3);
    }

    [Fact]
    public void LmGradientsMatchFiniteDifferencesAndLeaveAeAlone()
    {
        var (weights, model) = TinyBase(51);
        using var _ = weights;
        using var method = new IcaeMethod(model, Small(IcaeObjective.Lm), seed: 3);
        Randomise(method, 4);
        var targets = Targets(Document, 1, 8);
        ZeroGrads(method);
        method.Accumulate(Document, targets, 0);
        // The [AE] embedding is reached by auto-encoding only.
        Assert.All(method.Model.AeEmbedding.Grad!.ToArray(), v => Assert.Equal(0f, v));
        var parameters = method.Parameters.Select(p => p.Parameter).Where(p => p != method.Model.AeEmbedding).ToList();
        Assert.All(parameters, p => Assert.Contains(p.Grad!.ToArray(), v => v != 0));
        UioLlm.Tests.Model.GradCheck.PerTensor(() => method.Evaluate(Document, targets).Loss, parameters, new Rng(5), 1e-3, 3e-2, "icae (lm)");
    }

    [Fact]
    public void TheDecoderSeesTheContextOnlyThroughTheSlots()
    {
        var (weights, model) = TinyBase(52);
        using var _ = weights;
        using var method = new IcaeMethod(model, Small(), seed: 6);
        Randomise(method, 7);
        var changed = (int[])Document.Clone();
        changed[0] = 11;
        changed[2] = 29;
        changed[4] = 6;
        double[] Read(int[] doc)
        {
            using var session = method.OpenSession();
            return session.Feed(doc);
        }
        // Chunk 1 = inputs 5..9; tokens 6..10 are scored by its rows.
        var original = Read(Document);
        var moved = Read(changed);
        Assert.Contains(original[6..].Zip(moved[6..]), p => Math.Abs(p.First - p.Second) > 1e-4);
        method.Model.ZeroSlots = true;
        original = Read(Document);
        moved = Read(changed);
        // Without the slots, chunks 1 and 2 read only their own tokens (token 5 is scored by chunk 0's last row).
        Assert.Equal(original[6..], moved[6..]);
        Assert.NotEqual(original[1..5], moved[1..5]);
        // And with the slots zeroed the decoder is the base model over the chunk alone (frozen: no LoRA in the decoder).
        using var tape = new Tape(weights.Accelerator);
        using var __ = tape.NoGrad();
        var alone = model.Forward(tape, Document.AsSpan(5, 5)).Value.ToArray();
        var read = method.Model.Logits(tape, method.Model.DecoderHidden(tape, null, null, Document.AsSpan(5, 5))).Value.ToArray();
        Assert.Equal(alone, read);
    }

    [Fact]
    public void AutoEncodingTargetsAreTheContextTokens()
    {
        var (weights, model) = TinyBase(53);
        using var _ = weights;
        using var method = new IcaeMethod(model, Small(IcaeObjective.Ae), seed: 8);
        Randomise(method, 9);
        // The document's targets do not matter: all unscored, every chunk of inputs is still reconstructed.
        var unscored = Enumerable.Repeat(-100, Document.Length - 1).ToArray();
        var result = method.Evaluate(Document, unscored);
        Assert.Equal(3, result.Units);
        Assert.Equal(15, result.Tokens);
        Assert.Equal(result.Loss, method.Evaluate(Document, Document[1..]).Loss, 10);
        // By hand: the decoder reads [slots ; [AE] ; chunk[0..n-2]] and row j scores chunk[j].
        double expected = 0;
        using (var tape = new Tape(weights.Accelerator))
        using (tape.NoGrad())
        {
            for (int c = 0; c < 3; c++)
            {
                var chunk = Document.AsSpan(c * 5, 5);
                var slots = method.Model.Compress(tape, chunk);
                Assert.Equal(2, slots.Value.Dim(0));
                var lead = method.Model.AeEmbedding;
                var logits = method.Model.Logits(tape, method.Model.DecoderHidden(tape, slots, lead, chunk[..^1])).Value.ToArray();
                double sum = 0;
                for (int j = 0; j < 5; j++) sum -= LogProbs.At(logits.AsSpan(j * 37, 37), chunk[j]);
                expected += sum / 5;
            }
        }
        Assert.Equal(expected, result.Loss, 4);
        // "both" adds the language-model units of the three chunks.
        using var both = new IcaeMethod(model, Small(IcaeObjective.Both), seed: 8);
        Assert.Equal(6, both.Evaluate(Document, Document[1..]).Units);
    }

    [Fact]
    public void SessionLogProbsEqualTheTrainingForward()
    {
        var (weights, model) = TinyBase(54);
        using var _ = weights;
        using var method = new IcaeMethod(model, Small(IcaeObjective.Lm), seed: 10);
        Randomise(method, 11);
        var targets = Targets(Document, 0, 5, 12);
        var expected = method.Evaluate(Document, targets);
        Assert.Equal(3, expected.Units);
        Assert.Equal(12, expected.Tokens);
        using var session = method.OpenSession();
        double loss = SessionLoss(session, Document, targets, 5, out var logProbs);
        Assert.Equal(Document.Length, logProbs.Length);
        Assert.Equal(expected.Loss, loss, 4);
        // Three completed chunks' slots (2 rows each) plus one open token, 2 layers, K and V of 8 floats.
        Assert.Equal(2L * (3 * 2 + 1) * 2 * 8 * 4, session.KvBytes);
        Assert.Equal(expected.Loss, method.Accumulate(Document, targets, 0).Loss, 10);
        GenerationContinuesTheStream(method, session, Document, 6);
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        var (weights, model) = TinyBase(55);
        using var _ = weights;
        using var method = new IcaeMethod(model, Small(), seed: 12);
        Randomise(method, 13);
        using var foreign = new AutoCompressorMethod(model, new AutoCompressorConfig(4, 2, 2, 4f, 1));
        using var other = new IcaeMethod(model, Small(IcaeObjective.Ae));
        AdapterRoundTrip(method, seed => new IcaeMethod(model, Small(), seed), foreign, other);
        using var replica = method.CreateReplica()!;
        Assert.Equal(method.Config, ((IcaeMethod)replica).Config);
        Assert.NotSame(method.Parameters[0].Parameter, replica.Parameters[0].Parameter);
    }

    [Fact]
    public void DescriptorReadsAndChecksItsOptions()
    {
        var (weights, model) = TinyBase(56);
        using var _ = weights;
        var d = IcaeMethod.Descriptor;
        Assert.Equal("icae", d.Name);
        Assert.Equal(IcaeConfig.OptionNames, d.Options.Select(o => o.Name));
        var options = new MethodOptions(d.Name, new Dictionary<string, string> { ["chunk"] = "8", ["objective"] = "ae" });
        using (var m = (IcaeMethod)d.Create(model, options, 0))
        {
            Assert.Equal(new IcaeConfig(8, 2, 16, 32f, IcaeObjective.Ae), m.Config);
            Assert.Equal(m.Config.ToOptions(), options.Resolved);
        }
        using (var m = (IcaeMethod)d.Create(model, new MethodOptions(d.Name), 0))
            Assert.Equal(IcaeConfig.Default(64), m.Config);
        Assert.Throws<MethodOptionException>(() => d.Create(model, new MethodOptions(d.Name, new Dictionary<string, string> { ["objective"] = "gist" }), 0));
        Assert.Throws<MethodOptionException>(() => d.Create(model, new MethodOptions(d.Name, new Dictionary<string, string> { ["chunk"] = "60", ["slots"] = "8" }), 0));
        Assert.Throws<MethodOptionException>(() => d.Create(model, new MethodOptions(d.Name, new Dictionary<string, string> { ["slots"] = "0" }), 0));
        using var method = new IcaeMethod(model, Small());
        Assert.Throws<ArgumentException>(() => method.Accumulate([5], [], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([5, 6, 7], [6, 7, 8], 0));
    }

    [Fact]
    public void ShortTrainingLowersTheLoss()
    {
        var (weights, model) = TinyBase(57);
        using var _ = weights;
        using var method = new IcaeMethod(model, Small(IcaeObjective.Ae), seed: 14);
        var rng = new Rng(15);
        int[][] documents = [rng.Ints(11, 0, 37), rng.Ints(11, 0, 37)];
        var (before, after) = Fit(method, documents, steps: 30, lr: 2e-2f);
        Assert.True(after < 0.8 * before, $"reconstruction loss per chunk {before:F4} -> {after:F4}");
    }
}
