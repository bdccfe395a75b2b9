using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Methods.AutoCompressor;
using UioLlm.Model.Methods.Compression;
using UioLlm.Model.Modules;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods.AutoCompressor;
using UioLlm.Training.Methods.Icae;
using static UioLlm.Tests.Methods.Trained.TrainedMethodChecks;

namespace UioLlm.Tests.Methods.Trained;

public sealed class AutoCompressorTests
{
    private static AutoCompressorConfig Small(int bptt = 1) => new(Segment: 4, Summary: 2, Rank: 2, Alpha: 4f, Bptt: bptt);

    // 17 tokens: 16 inputs = 4 segments of 4.
    private static readonly int[] Document = [3, 17, 5, 30, 8, 8, 21, 2, 14, 9, 33, 1, 26, 7, 12, 19, 4];

    [Fact]
    public void GradientsOfEveryParameterMatchFiniteDifferences()
    {
        var (weights, model) = TinyBase(40);
        using var _ = weights;
        using var method = new AutoCompressorMethod(model, Small(bptt: -1), seed: 1);
        RandomiseLoraB(method, 2);
        var targets = Targets(Document, 2, 9);
        GradientsMatchFiniteDifferences(method, Document, targets, () => method.Evaluate(Document, targets).Loss, "autocompressor (bptt -1)", eps: 1e-3);
    }

    [Fact]
    public void BpttStopsGradientsBeyondItsDepthAndLeavesTheLossAlone()
    {
        var (weights, model) = TinyBase(41);
        using var _ = weights;
        using var one = new AutoCompressorMethod(model, Small(bptt: 1), seed: 3);
        using var three = new AutoCompressorMethod(model, Small(bptt: 3), seed: 3);
        using var full = new AutoCompressorMethod(model, Small(bptt: -1), seed: 3);
        foreach (var m in new[] { one, three, full }) RandomiseLoraB(m, 4);
        float[][] Gradient(AutoCompressorMethod m, int[] doc)
        {
            ZeroGrads(m);
            m.Accumulate(doc, doc[1..], 0);
            return [.. m.Parameters.Select(p => p.Parameter.Grad!.ToArray())];
        }
        // A depth that covers the document (3 for 4 segments) is full backpropagation.
        Assert.Equal(Gradient(full, Document), Gradient(three, Document));
        // Depth 1: the same loss, other gradients (segments 2 and 3 no longer reach the passes of segments 0 and 1).
        Assert.Equal(full.Evaluate(Document, Document[1..]).Loss, one.Accumulate(Document, Document[1..], 0).Loss, 10);
        var cut = Gradient(one, Document);
        Assert.Contains(Gradient(full, Document).Zip(cut), pair => !pair.First.SequenceEqual(pair.Second));
        Assert.All(cut, g => Assert.Contains(g, v => v != 0));

        // Depth 1 is the exact gradient of the truncated objective: segment i's loss with the summaries of segments
        // before i-1 frozen at their current values, segment i-1's pass and segment i's pass live.
        var targets = Targets(Document, 5);
        int kappa = 2, s = 4, segments = 4;
        var frozen = new List<float[]>();
        using (var tape = new Tape(weights.Accelerator))
        using (tape.NoGrad())
        {
            var reads = new List<Var>();
            for (int i = 0; i < segments - 1; i++)
            {
                var pass = one.Model.SegmentPass(tape, reads.Count == 0 ? null : tape.ConcatRows(reads), Document.AsSpan(i * s, s), true);
                var summary = tape.SliceRows(pass, i * kappa + s, kappa);
                frozen.Add(summary.Value.ToArray());
                reads.Add(summary);
            }
        }
        double Truncated()
        {
            using var tape = new Tape(weights.Accelerator);
            using var __ = tape.NoGrad();
            double total = 0;
            for (int i = 0; i < segments; i++)
            {
                var reads = new List<Var>();
                for (int j = 0; j < i - 1; j++) reads.Add(Var.Constant(weights.Accelerator.FromArray(frozen[j], [kappa, 16])));
                if (i > 0)
                {
                    var earlier = one.Model.SegmentPass(tape, reads.Count == 0 ? null : tape.ConcatRows(reads), Document.AsSpan((i - 1) * s, s), true);
                    reads.Add(tape.SliceRows(earlier, (i - 1) * kappa + s, kappa));
                }
                var pass = one.Model.SegmentPass(tape, reads.Count == 0 ? null : tape.ConcatRows(reads), Document.AsSpan(i * s, s), false);
                total += one.Model.Loss(tape, tape.SliceRows(pass, i * kappa, s), targets.AsSpan(i * s, s)).Value.ToArray()[0];
                foreach (var r in reads.Where(r => r.IsLeaf)) r.Value.Dispose();
            }
            return total;
        }
        GradientsMatchFiniteDifferences(one, Document, targets, Truncated, "autocompressor (bptt 1, truncated objective)", eps: 1e-3);
    }

    [Fact]
    public void LaterSegmentsSeeSegmentZeroOnlyThroughTheAccumulatedSummaries()
    {
        var (weights, model) = TinyBase(42);
        using var _ = weights;
        using var method = new AutoCompressorMethod(model, Small(), seed: 5);
        RandomiseLoraB(method, 6);
        var changed = (int[])Document.Clone();
        changed[0] = 11;
        changed[1] = 29;
        changed[3] = 6;
        double[] Read(int[] doc)
        {
            using var session = method.OpenSession();
            return session.Feed(doc);
        }
        // Segment 3 = inputs 12..15; tokens 13..16 are scored by its rows.
        var segment3 = 13..17;
        var original = Read(Document);
        var moved = Read(changed);
        Assert.Contains(original[segment3].Zip(moved[segment3]), p => Math.Abs(p.First - p.Second) > 1e-4);
        method.Model.ZeroSummaries = true;
        original = Read(Document);
        moved = Read(changed);
        // Without summaries every segment from 1 on reads only its own tokens (token 4 is scored by segment 0's last row).
        Assert.Equal(original[5..], moved[5..]);
        Assert.NotEqual(original[1..4], moved[1..4]);
    }

    [Fact]
    public void FreshAdapterReadsTheFirstSegmentAsTheBaseModel()
    {
        var (weights, model) = TinyBase(43);
        using var _ = weights;
        using var method = new AutoCompressorMethod(model, Small(), seed: 7);
        using var tape = new Tape(weights.Accelerator);
        using var __ = tape.NoGrad();
        int[] ids = Document[..4];
        var expected = model.Forward(tape, ids).Value.ToArray();
        var pass = method.Model.SegmentPass(tape, null, ids, withSummaryTokens: true);
        Assert.Equal(4 + 2, pass.Value.Dim(0));
        var actual = method.Model.Logits(tape, tape.SliceRows(pass, 0, 4)).Value.ToArray();
        Check.Close(expected, actual, 1e-5, 1e-4, "first segment with B = 0 against the base model");
    }

    [Fact]
    public void AdaptedBlocksEqualTheBaseWithTheSameLoraAttached()
    {
        // A base with q/k/v biases and a local first layer, so the adapted path's bias and mask handling are exercised.
        var config = Model.GradCheck.TinyConfig() with { AttentionBias = true, LocalLayers = 1, LocalWindow = 3 };
        using var weights = Model.GradCheck.RandomWeights(config, 48);
        var frozen = new LlamaModel(weights);
        var reference = new LlamaModel(weights);
        using var blocks = new AdaptedBlocks(frozen, 2, 4f, ["q_proj", "v_proj", "o_proj"], new Random(1), "test.");
        var attached = reference.AttachLora(2, 4f, 2, "q_proj", "v_proj", "o_proj");
        var rng = new Rng(3);
        foreach (var (mine, theirs) in blocks.Parameters().Zip(attached.SelectMany(l => l.Parameters())))
        {
            mine.Value.CopyFrom(rng.Normal(mine.Value.Length, 0.3f));
            theirs.Value.CopyFrom(mine.Value.ToArray());
        }
        var x = rng.Normal(9 * 16);
        using var tape = new Tape(weights.Accelerator);
        using var _ = tape.NoGrad();
        var input = Var.Constant(weights.Accelerator.FromArray(x, [9, 16]));
        var expected = reference.Hidden(tape, input).Value.ToArray();
        var actual = frozen.FinalNorm.Forward(tape, blocks.Forward(tape, input)).Value.ToArray();
        Check.Close(expected, actual, 1e-5, 1e-4, "adapted blocks against the base with the same LoRA attached");
        Assert.Throws<ArgumentException>(() => new AdaptedBlocks(reference, 2, 4f, ["q_proj"], new Random(1), "x."));
        Assert.Throws<ArgumentException>(() => new AdaptedBlocks(frozen, 2, 4f, ["up_proj"], new Random(1), "x."));
        input.Value.Dispose();
    }

    [Fact]
    public void SessionLogProbsEqualTheTrainingForward()
    {
        var (weights, model) = TinyBase(44);
        using var _ = weights;
        using var method = new AutoCompressorMethod(model, Small(), seed: 8);
        RandomiseLoraB(method, 9);
        var rng = new Rng(10);
        method.Model.SummaryEmbedding.Value.CopyFrom(rng.Normal(method.Model.SummaryEmbedding.Value.Length));
        var targets = Targets(Document, 0, 6, 7);
        var expected = method.Evaluate(Document, targets);
        Assert.Equal(4, expected.Units);
        Assert.Equal(13, expected.Tokens);
        using var session = method.OpenSession();
        double loss = SessionLoss(session, Document, targets, 4, out var logProbs);
        Assert.Equal(Document.Length, logProbs.Length);
        Assert.Equal(expected.Loss, loss, 4);
        Assert.Equal(Document.Length, session.TokensSeen);
        // Four completed segments' summaries (2 rows each) plus one open token, 2 layers, K and V of 8 floats.
        Assert.Equal(2L * (4 * 2 + 1) * 2 * 8 * 4, session.KvBytes);
        Assert.False(session.OutOfTrainedRange);
        Assert.Equal(expected.Loss, method.Accumulate(Document, targets, 0).Loss, 10);
        GenerationContinuesTheStream(method, session, Document, 6);
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        var (weights, model) = TinyBase(45);
        using var _ = weights;
        using var method = new AutoCompressorMethod(model, Small(), seed: 11);
        RandomiseLoraB(method, 12);
        using var foreign = new IcaeMethod(model, new(4, 2, 2, 4f, UioLlm.Model.Methods.Icae.IcaeObjective.Both));
        using var other = new AutoCompressorMethod(model, Small(bptt: 2));
        AdapterRoundTrip(method, seed => new AutoCompressorMethod(model, Small(), seed), foreign, other);
        using var replica = method.CreateReplica()!;
        Assert.IsType<AutoCompressorMethod>(replica);
        Assert.Equal(method.Config, ((AutoCompressorMethod)replica).Config);
        Assert.NotSame(method.Parameters[0].Parameter, replica.Parameters[0].Parameter);
    }

    [Fact]
    public void DescriptorReadsAndChecksItsOptions()
    {
        var (weights, model) = TinyBase(46);
        using var _ = weights;
        var d = AutoCompressorMethod.Descriptor;
        Assert.Equal("autocompressor", d.Name);
        Assert.Equal(AutoCompressorConfig.OptionNames, d.Options.Select(o => o.Name));
        var options = new MethodOptions(d.Name, new Dictionary<string, string> { ["segment"] = "8", ["summary"] = "3", ["bptt"] = "-1" });
        using (var m = (AutoCompressorMethod)d.Create(model, options, 0))
        {
            Assert.Equal(new AutoCompressorConfig(8, 3, 16, 32f, -1), m.Config);
            Assert.Equal(m.Config.ToOptions(), options.Resolved);
            Assert.Equal("autocompressor", m.Name);
        }
        using (var m = (AutoCompressorMethod)d.Create(model, new MethodOptions(d.Name), 0))
            Assert.Equal(AutoCompressorConfig.Default(64), m.Config);
        Assert.Throws<MethodOptionException>(() => d.Create(model, new MethodOptions(d.Name, new Dictionary<string, string> { ["bptt"] = "0" }), 0));
        Assert.Throws<MethodOptionException>(() => d.Create(model, new MethodOptions(d.Name, new Dictionary<string, string> { ["segment"] = "60", ["summary"] = "8" }), 0));
        Assert.Throws<MethodOptionException>(() => d.Create(model, new MethodOptions(d.Name, new Dictionary<string, string> { ["rank"] = "x" }), 0));
        using var method = new AutoCompressorMethod(model, Small());
        Assert.Throws<ArgumentException>(() => method.Accumulate([5], [], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([5, 6, 7], [6], 0));
        Assert.ThrowsAny<ArgumentException>(() => method.Accumulate([5, 60, 7], [60, 7], 0));
    }

    [Fact]
    public void ShortTrainingLowersTheLoss()
    {
        var (weights, model) = TinyBase(47);
        using var _ = weights;
        using var method = new AutoCompressorMethod(model, Small(bptt: 2), seed: 13);
        var rng = new Rng(14);
        int[][] documents = [rng.Ints(13, 0, 37), rng.Ints(13, 0, 37)];
        var (before, after) = Fit(method, documents, steps: 30, lr: 2e-2f);
        Assert.True(after < 0.8 * before, $"loss per segment {before:F4} -> {after:F4}");
    }
}
