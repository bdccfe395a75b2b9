using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using static UioLlm.Tests.Methods.Trained.RecurrentMethodSupport;

namespace UioLlm.Tests.Methods.Trained;

public sealed class RmtMethodTests
{
    private const int L = 4, N = 2;
    private static readonly RmtConfig Small = new(SegmentLength: L, MemoryTokens: N, Rank: 2, Alpha: 4);

    /// <summary>15 tokens: 14 inputs in segments of 4, 4, 4 and 2.</summary>
    private static int[] Document(int seed, int length = 15) => new Rng(seed).Ints(length, 0, Vocab);

    [Fact]
    public void AccumulateMatchesFiniteDifferencesOfTheLossForEveryParameter()
    {
        var (weights, model) = Base(1);
        using var _ = weights;
        using var rmt = new RmtMethod(model, Small, bptt: -1, seed: 2);
        Randomise(rmt, 3);
        var document = Document(4);
        var targets = Targets(document, 1, 5, 6, 7);   // segment 1 has one scored token left, the others more
        ZeroGrads(rmt);
        var result = rmt.Accumulate(document, targets, seed: 0);
        Assert.Equal(4, result.Units);
        Assert.Equal(10, result.Tokens);
        Assert.Equal(rmt.Evaluate(document, targets).Loss, result.Loss, 5);
        Assert.Equal(9, rmt.Parameters.Count);   // memory + (q, v) x (A, B) x 2 layers
        Assert.All(rmt.Parameters, p => Assert.Contains(p.Parameter.Grad!.ToArray(), g => g != 0));
        GradCheck.PerTensor(() => rmt.Evaluate(document, targets).Loss, rmt.Parameters.Select(p => p.Parameter).ToList(), new Rng(5), 1e-2, 3e-2, "RMT");
    }

    [Fact]
    public void SegmentZeroReachesSegmentTwoOnlyThroughTheMemory()
    {
        var (weights, model) = Base(6);
        using var _ = weights;
        using var rmt = new RmtMethod(model, Small, seed: 7);
        Randomise(rmt, 8);
        var a = Document(9, 13);
        var b = (int[])a.Clone();
        for (int i = 0; i < L; i++) b[i] = (a[i] + 1 + i) % Vocab;   // only segment 0 differs

        using var tape = new Tape(model.Accelerator);
        using var noGrad = tape.NoGrad();
        (Var Memory, float[] Logits) SegmentTwo(int[] doc)
        {
            var memory = rmt.Model.Memory;
            for (int s = 0; s < 2; s++) memory = rmt.Model.Segment(tape, memory, doc.AsSpan(s * L, L), write: true).Written!;
            return (memory, Logits(model, tape, rmt.Model.Segment(tape, memory, doc.AsSpan(2 * L, L), write: false).Hidden));
        }
        var (memoryA, logitsA) = SegmentTwo(a);
        var (memoryB, logitsB) = SegmentTwo(b);
        // Segment 2 sees none of segment 0's tokens, yet its predictions move: the memory carried them.
        Assert.True(MaxAbsDiff(logitsA, logitsB) > 1e-3, $"segment 2's logits did not move ({MaxAbsDiff(logitsA, logitsB):G3})");
        Assert.True(MaxAbsDiff(memoryA.Value.ToArray(), memoryB.Value.ToArray()) > 1e-3);
        // ... and only the memory: segment 2 of A read with B's memory gives B's logits.
        var swapped = Logits(model, tape, rmt.Model.Segment(tape, memoryB, a.AsSpan(2 * L, L), write: false).Hidden);
        Assert.True(MaxAbsDiff(logitsB, swapped) < 1e-5);
        // The session agrees: segment 2's log-probabilities differ between the documents.
        using var sa = rmt.OpenSession();
        using var sb = rmt.OpenSession();
        var pa = sa.Feed(a);
        var pb = sb.Feed(b);
        Assert.True(Math.Abs(pa[2 * L + 2] - pb[2 * L + 2]) > 1e-4);
    }

    [Fact]
    public void BpttCutsTheGradientAtMemoryTransitionsBeforeTheLastK2Segments()
    {
        var (weights, model) = Base(10);
        using var _ = weights;
        var document = Document(11, 13);                          // three segments of 4
        var targets = Targets(document, 0, 1, 2, 3, 4, 5, 6, 7);   // only segment 2 is scored
        float[][] Gradient(int bptt)
        {
            using var rmt = new RmtMethod(model, Small, bptt, seed: 12);
            Randomise(rmt, 13);
            ZeroGrads(rmt);
            var r = rmt.Accumulate(document, targets, 0);
            Assert.Equal(1, r.Units);
            return Grads(rmt);
        }
        var one = Gradient(1);
        var two = Gradient(2);
        var three = Gradient(3);
        var full = Gradient(-1);
        // The initial memory is read by segment 0 only: its gradient needs both transitions 0 -> 1 -> 2.
        Assert.All(one[0], g => Assert.Equal(0f, g));
        Assert.All(two[0], g => Assert.Equal(0f, g));
        Assert.Contains(three[0], g => Math.Abs(g) > 1e-6);
        // k2 = 2 adds the path through segment 1's write to the LoRA gradient; k2 = 3 is full BPTT.
        Assert.True(MaxAbsDiff(one[1], two[1]) > 1e-6);
        Assert.True(MaxAbsDiff(two[1], three[1]) > 1e-6);
        for (int i = 0; i < full.Length; i++) Assert.Equal(three[i], full[i]);
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        var (weights, model) = Base(14);
        using var _ = weights;
        string folder = TempFolder("rmt"), other = TempFolder("rmt-txl");
        try
        {
            using var saved = RmtMethod.Create(model, new MethodOptions("rmt", new Dictionary<string, string> { ["segment"] = "4", ["memory"] = "2", ["rank"] = "2", ["alpha"] = "4", ["bptt"] = "2" }), 15);
            Randomise(saved, 16);
            saved.SaveAdapter(folder, "tiny-base");
            var recorded = TrainableMethods.ReadAdapterMethod(folder)!.Value;
            Assert.Equal("rmt", recorded.Method);
            Assert.Equal(saved.Options, recorded.Options);

            // Rebuilt from the recorded options alone, as TrainableMethods.Load does.
            using var loaded = RmtMethod.Descriptor.Create(model, new MethodOptions("rmt", recorded.Options), 99);
            Assert.NotEqual(Values(saved)[0], Values(loaded)[0]);
            loaded.LoadAdapter(folder);
            var want = Values(saved);
            var got = Values(loaded);
            for (int i = 0; i < want.Length; i++) Assert.Equal(want[i], got[i]);
            var document = Document(17);
            Assert.Equal(2, ((RmtMethod)loaded).Bptt);
            Assert.Equal(saved.Evaluate(document, document[1..]).Loss, ((RmtMethod)loaded).Evaluate(document, document[1..]).Loss);

            // Other settings, another method: refused with the reason.
            using var wider = new RmtMethod(model, Small with { Rank = 3 }, bptt: 2);
            Assert.Contains("rank=3", Assert.Throws<ModelFormatException>(() => wider.LoadAdapter(folder)).Message);
            using var txl = new TransformerXlMethod(model, new TransformerXlConfig(4, 2, 4));
            txl.SaveAdapter(other);
            Assert.Contains("'transformer-xl' adapter, not a 'rmt' one", Assert.Throws<ModelFormatException>(() => saved.LoadAdapter(other)).Message);
            Assert.Throws<ModelFormatException>(() => saved.LoadAdapter(Path.Combine(other, "missing")));
        }
        finally
        {
            foreach (var f in new[] { folder, other })
                if (Directory.Exists(f)) Directory.Delete(f, recursive: true);
        }
    }

    [Fact]
    public void OptionsAndDocumentsAreChecked()
    {
        var (weights, model) = Base(18);
        using var _ = weights;
        RmtMethod Make(params (string Key, string Value)[] given) =>
            RmtMethod.Create(model, new MethodOptions("rmt", given.ToDictionary(g => g.Key, g => g.Value)), 0);
        Assert.Contains("memory", Assert.Throws<MethodOptionException>(() => Make(("memory", "0"))).Message);
        Assert.Contains("bptt", Assert.Throws<MethodOptionException>(() => Make(("bptt", "0"))).Message);
        Assert.Contains("segment", Assert.Throws<MethodOptionException>(() => Make(("memory", "10"), ("segment", "45"))).Message);
        using (var defaults = Make())
        {
            Assert.Equal("10", defaults.Options["memory"]);
            Assert.Equal("44", defaults.Options["segment"]);
            Assert.Equal("-1", defaults.Options["bptt"]);
        }
        // The descriptor lists exactly the options Create reads, and the method records them as resolved.
        var given = new MethodOptions("rmt", new Dictionary<string, string> { ["segment"] = "6", ["memory"] = "3", ["rank"] = "2", ["alpha"] = "0.5", ["bptt"] = "2" });
        using (var described = RmtMethod.Descriptor.Create(model, given, 0))
        {
            given.RejectUnknown(RmtMethod.Descriptor.Options.Select(o => o.Name));
            Assert.Equal(RmtMethod.Descriptor.Options.Select(o => o.Name).Order(), given.Resolved.Keys.Order());
            Assert.Equal(given.Resolved, ((RmtMethod)described).Options);
            using var replica = (RmtMethod)described.CreateReplica()!;
            Assert.Equal(((RmtMethod)described).Options, replica.Options);
            Assert.Equal(described.Parameters.Select(p => p.Parameter.Name), replica.Parameters.Select(p => p.Parameter.Name));
            Assert.Equal(described.Parameters.Select(p => p.Parameter.Value.ShapeString), replica.Parameters.Select(p => p.Parameter.Value.ShapeString));
        }
        using var rmt = new RmtMethod(model, Small);
        Assert.Contains("at least 2 tokens", Assert.Throws<ArgumentException>(() => rmt.Accumulate([5], [], 0)).Message);
        Assert.Contains("targets", Assert.Throws<ArgumentException>(() => rmt.Accumulate([5, 6, 7], [6], 0)).Message);
    }

    [Fact]
    public void SessionLogProbsAgreeWithTheTrainingForward()
    {
        var (weights, model) = Base(19);
        using var _ = weights;
        using var rmt = new RmtMethod(model, Small, seed: 20);
        Randomise(rmt, 21);
        var document = Document(22);   // 14 inputs: segments of 4, 4, 4, 2; the last token starts no new segment
        var targets = document[1..];
        using var session = rmt.OpenSession();
        var logProbs = FeedInPieces(session, document, 3, 5, 1, 6);
        Assert.True(double.IsNaN(logProbs[0]));
        Assert.Equal(15, session.TokensSeen);
        Assert.Equal(3, ((RmtSession)session).SegmentsWritten);
        Assert.Equal(rmt.Evaluate(document, targets).Loss, SegmentLossFromLogProbs(logProbs, targets, L), 4);

        // Token by token against the segment forward's logits.
        using var tape = new Tape(model.Accelerator);
        using var noGrad = tape.NoGrad();
        var memory = rmt.Model.Memory;
        for (int start = 0, s = 0; start < 14; start += L, s++)
        {
            int length = Math.Min(L, 14 - start);
            var segment = rmt.Model.Segment(tape, memory, document.AsSpan(start, length), write: true);
            var logits = Logits(model, tape, segment.Hidden);
            for (int t = 0; t < length; t++)
                Assert.Equal(LogProbs.At(logits.AsSpan(t * Vocab, Vocab), document[start + t + 1]), logProbs[start + t + 1], 4);
            memory = segment.Written!;
        }
        // The cache holds the last segment's read memory and its 3 tokens; the next memory is not written yet.
        Assert.Equal(2 * model.Config.Layers * (N + 3) * model.Config.KvDim * sizeof(float) + N * model.Config.Dim * sizeof(float), session.KvBytes);
    }

    [Fact]
    public void TrainingLowersTheLossOnARepetitiveTask()
    {
        var (weights, model) = Base(23);
        using var _ = weights;
        using var rmt = new RmtMethod(model, Small, seed: 24);
        var documents = RepetitiveDocuments(25, count: 4, period: L, length: 3 * L + 1);
        double before = MeanLoss((d, t) => rmt.Evaluate(d, t), documents);
        Train(rmt, documents, steps: 60, learningRate: 2e-2f);
        double after = MeanLoss((d, t) => rmt.Evaluate(d, t), documents);
        Assert.True(after < 0.6 * before, $"RMT loss {before:F3} -> {after:F3}");
    }
}
