using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training;
using UioLlm.Training.Methods;
using static UioLlm.Tests.Methods.Trained.RecurrentMethodSupport;

namespace UioLlm.Tests.Methods.Trained;

public sealed class MemorizingTests
{
    private const int L = 4;

    private static MemorizingConfig Gated(int topK = 2) => new(SegmentLength: L, Layer: 1, TopK: topK, Rank: 2, Alpha: 4, Gated: true);
    private static MemorizingConfig Focused(int negatives = 1, int topK = 2) => new(SegmentLength: L, Layer: 1, TopK: topK, Rank: 2, Alpha: 4, Gated: false, Negatives: negatives);

    private static int[] Document(int seed, int length = 15) => new Rng(seed).Ints(length, 0, Vocab);

    /// <summary>Gives the gate bias a value that opens the gate (sigmoid(0.5) = 0.62) on top of <see cref="Randomise"/>.</summary>
    private static void Prepare(MemorizingMethod method, int seed)
    {
        Randomise(method, seed);
        if (method.Model.GateBias is { } b) b.Value.CopyFrom(new Rng(seed + 1).Normal(b.Value.Length, 0.3f).Select(x => x + 0.5f).ToArray());
    }

    /// <summary>The memory each segment reads (start memory, then every earlier segment's pairs), at the current parameters.</summary>
    private static List<KnnMemory> Memories(MemorizingMethod m, int[] document, KnnMemory? start)
    {
        var result = new List<KnnMemory>();
        var memory = m.Model.NewMemory();
        if (start is not null) memory.Add(start);
        for (int s = 0; s < document.Length - 1; s += L)
        {
            var copy = m.Model.NewMemory();
            copy.Add(memory);
            result.Add(copy);
            using var tape = new Tape(m.Base.Accelerator);
            using var noGrad = tape.NoGrad();
            m.Model.Segment(tape, document.AsSpan(s, Math.Min(L, document.Length - 1 - s)), memory, out var kv, out _);
            memory.Add(kv.RawKeys.Value, kv.Values.Value);
        }
        return result;
    }

    /// <summary>The training loss with every segment's memory held fixed at <paramref name="memories"/>.</summary>
    private static double FixedMemoryLoss(MemorizingMethod m, int[] document, int[] targets, IReadOnlyList<KnnMemory> memories)
    {
        using var tape = new Tape(m.Base.Accelerator);
        using var noGrad = tape.NoGrad();
        double total = 0;
        for (int start = 0, s = 0; start < targets.Length; start += L, s++)
        {
            int length = Math.Min(L, targets.Length - start);
            var hidden = m.Model.Segment(tape, document.AsSpan(start, length), memories[s], out _, out _);
            var segmentTargets = targets.AsSpan(start, length);
            if (segmentTargets.ToArray().Any(t => t != -100)) total += m.Base.Head.CrossEntropy(tape, hidden, segmentTargets).Value.ToArray()[0];
        }
        return total;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AccumulateMatchesFiniteDifferencesWithTheMemoryConstant(bool gated)
    {
        var (weights, model) = Base(61);
        using var owned = weights;
        // topk covers every stored row: the top-k selection is piecewise constant, and a finite difference across one of
        // its jumps would not be a derivative. MemoryAttentionGradientsMatchFiniteDifferences checks a real top-k.
        using var m = new MemorizingMethod(model, gated ? Gated(topK: 16) : Focused(topK: 16), seed: 62);
        Prepare(m, 63);
        var document = Document(64);
        var targets = Targets(document, 0, 9, 10);
        ZeroGrads(m);
        var result = m.Accumulate(document, targets, seed: 5);
        Assert.Equal(4, result.Units);
        Assert.Equal(11, result.Tokens);
        Assert.Equal(gated ? 9 : 8, m.Parameters.Count);   // (q, v) x (A, B) x 2 layers (+ gate)
        var memories = Memories(m, document, m.Distractors(document, 5));
        Assert.Equal(gated ? 0 : L, memories[0].Rows);   // the crossbatch distractor segment
        Assert.Equal(result.Loss, FixedMemoryLoss(m, document, targets, memories), 5);
        if (gated) Assert.Equal(m.Evaluate(document, targets).Loss, result.Loss, 5);
        GradCheck.PerTensor(() => FixedMemoryLoss(m, document, targets, memories), m.Parameters.Select(p => p.Parameter).ToList(), new Rng(65), 1e-2, 3e-2,
            $"{m.Name} (memory held fixed)");
    }

    [Theory]
    [InlineData(true, 0)]
    [InlineData(false, 0)]
    [InlineData(true, 2)]
    [InlineData(false, 2)]
    public void MemoryAttentionGradientsMatchFiniteDifferences(bool gated, int topK)
    {
        var accelerator = TestBackend.Shared;
        var rng = new Rng(90);
        var memory = new KnnMemory(2, 4);
        using (var mk = accelerator.FromArray(rng.Normal(5 * 8), [5, 2, 4]))
        using (var mv = accelerator.FromArray(rng.Normal(5 * 8), [5, 2, 4]))
            memory.Add(mk, mv);
        var qRot = Var.Leaf(accelerator.FromArray(rng.Normal(3 * 16), [3, 4, 4]), true, "q");
        var qRaw = Var.Leaf(accelerator.FromArray(rng.Normal(3 * 16), [3, 4, 4]), true, "q.raw");
        var k = Var.Leaf(accelerator.FromArray(rng.Normal(3 * 8), [3, 2, 4]), true, "k");
        var v = Var.Leaf(accelerator.FromArray(rng.Normal(3 * 8), [3, 2, 4]), true, "v");
        var bias = gated ? Var.Leaf(accelerator.FromArray(rng.Normal(4), [4]), true, "gate") : null;
        var weights = rng.Normal(48);
        var leaves = new List<Var> { qRot, qRaw, k, v };
        if (bias is not null) leaves.Add(bias);
        try
        {
            double Loss()
            {
                using var tape = new Tape(accelerator);
                var o = MemoryAttention.Forward(tape, qRot, qRaw, k, v, memory, topK, bias, out _).Value.ToArray();
                return o.Select((x, i) => (double)x * weights[i]).Sum();
            }
            foreach (var p in leaves) p.ZeroGrad();
            using (var tape = new Tape(accelerator))
            using (var seed = accelerator.FromArray(weights, [3, 4, 4]))
                tape.Backward([MemoryAttention.Forward(tape, qRot, qRaw, k, v, memory, topK, bias, out _)], [seed]);
            GradCheck.PerTensor(Loss, leaves, new Rng(91), 1e-3, 1e-2, $"memory attention gated={gated} topk={topK}");
        }
        finally
        {
            foreach (var p in leaves)
            {
                p.DisposeLeaf();
                p.Value.Dispose();
            }
        }
    }

    [Fact]
    public void EarlierSegmentsReachLaterOnesOnlyThroughRetrieval()
    {
        var (weights, model) = Base(66);
        using var owned = weights;
        var a = Document(67, 13);
        var b = (int[])a.Clone();
        for (int i = 0; i < L; i++) b[i] = (a[i] + 5) % Vocab;   // only segment 0 differs
        double[] Segment2(MemorizingMethod m, int[] doc)
        {
            using var s = m.OpenSession();
            return s.Feed(doc)[(2 * L + 1)..(3 * L + 1)];   // predictions made inside segment 2
        }

        using (var retrieving = new MemorizingMethod(model, Gated(topK: 3), seed: 68))
        {
            Prepare(retrieving, 69);
            var pa = Segment2(retrieving, a);
            Assert.True(pa.Zip(Segment2(retrieving, b)).Max(p => Math.Abs(p.First - p.Second)) > 1e-5, "retrieval carries segment 0 forward");
            // Gate forced shut: segment 2 reads nothing of segment 0.
            retrieving.Model.GateBias!.Value.CopyFrom(Enumerable.Repeat(-1e4f, model.Config.Heads).ToArray());
            Assert.Equal(Segment2(retrieving, a), Segment2(retrieving, b));
        }
        foreach (var config in new[] { Gated(topK: 0), Focused(negatives: 0, topK: 0) })
        {
            using var none = new MemorizingMethod(model, config, seed: 70);
            Prepare(none, 71);
            Assert.Equal(Segment2(none, a), Segment2(none, b));
        }
        using var focused = new MemorizingMethod(model, Focused(topK: 3), seed: 72);
        Prepare(focused, 73);
        Assert.True(Segment2(focused, a).Zip(Segment2(focused, b)).Max(p => Math.Abs(p.First - p.Second)) > 1e-5);
    }

    [Fact]
    public void RetrievalReturnsTheTrueTopKByQueryKeyScore()
    {
        var rng = new Rng(74);
        var memory = new KnnMemory(kvHeads: 2, headDim: 4);
        var accelerator = TestBackend.Shared;
        using var keys = accelerator.FromArray(rng.Normal(9 * 8), [9, 2, 4]);
        using var values = accelerator.FromArray(rng.Normal(9 * 8), [9, 2, 4]);
        memory.Add(keys, values);
        Assert.Equal(9, memory.Rows);
        var query = rng.Normal(4);
        var k = keys.ToArray();
        for (int head = 0; head < 2; head++)
        {
            var brute = Enumerable.Range(0, 9)
                .Select(j => (Score: Enumerable.Range(0, 4).Sum(x => (double)query[x] * k[(j * 2 + head) * 4 + x]) * 0.5, Row: j))
                .OrderByDescending(p => p.Score).Take(3).Select(p => p.Row).ToArray();
            Assert.Equal(brute, memory.TopK(query, head, 3, 0.5).Select(p => p.Row).ToArray());
        }
        Assert.Empty(memory.TopK(query, 0, 0, 0.5));

        // A bounded memory keeps the newest rows.
        var bounded = new KnnMemory(2, 4, capacity: 4);
        bounded.Add(keys, values);
        Assert.Equal(4, bounded.Rows);
        Assert.Equal(k[(5 * 8)..], bounded.Keys.ToArray());
        Assert.Equal(values.ToArray()[(5 * 8)..], bounded.Values.ToArray());
        Assert.Equal(9, memory.TopK(query, 1, 50, 0.5).Count);

        // In the model: every query and head retrieves min(topk, rows) distinct earlier rows.
        var (weights, model) = Base(75);
        using var owned = weights;
        using var m = new MemorizingMethod(model, Gated(topK: 3), seed: 76);
        var doc = Document(77, 12);
        var filled = m.Model.NewMemory();
        m.Model.Fill(doc.AsSpan(0, 2 * L), filled);
        using var tape = new Tape(model.Accelerator);
        using var noGrad = tape.NoGrad();
        m.Model.Segment(tape, doc.AsSpan(2 * L, L), filled, out _, out var retrieval);
        Assert.Equal(L, retrieval.Rows.Length);
        foreach (var row in retrieval.Rows)
            foreach (var head in row)
            {
                Assert.Equal(3, head.Distinct().Count());
                Assert.All(head, r => Assert.InRange(r, 0, 2 * L - 1));
            }
    }

    [Fact]
    public void CrossbatchDistractorsAreDrawnFromTheSeed()
    {
        var (weights, model) = Base(92);
        using var owned = weights;
        using var m = new MemorizingMethod(model, Focused(negatives: 2), seed: 93);
        Prepare(m, 94);
        var document = Document(95);
        var a = m.Distractors(document, 1)!;
        Assert.Equal(2 * L, a.Rows);
        Assert.Equal(a.Keys.ToArray(), m.Distractors(document, 1)!.Keys.ToArray());
        Assert.NotEqual(a.Keys.ToArray(), m.Distractors(document, 2)!.Keys.ToArray());
        // Training reads them (the loss differs with the seed); evaluation does not.
        ZeroGrads(m);
        double l1 = m.Accumulate(document, document[1..], 1).Loss, l2 = m.Accumulate(document, document[1..], 2).Loss;
        Assert.NotEqual(l1, l2);
        Assert.Equal(m.Run(document, document[1..], backward: false, m.Distractors(document, 1)).Loss, l1, 6);
        using var none = new MemorizingMethod(model, Focused(negatives: 0), seed: 93);
        Assert.Null(none.Distractors(document, 1));
        using var gated = new MemorizingMethod(model, Gated(), seed: 93);
        Assert.Null(gated.Distractors(document, 1));
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        var (weights, model) = Base(78);
        using var owned = weights;
        string folder = TempFolder("mem"), other = TempFolder("mem-txl");
        try
        {
            using var saved = MemorizingMethod.Create(model, new MethodOptions("memorizing", new Dictionary<string, string> { ["segment"] = "4", ["rank"] = "2", ["layer"] = "1" }), 79, gated: true);
            Prepare(saved, 80);
            saved.SaveAdapter(folder);
            var recorded = TrainableMethods.ReadAdapterMethod(folder)!.Value;
            Assert.Equal("memorizing", recorded.Method);
            Assert.Equal(new Dictionary<string, string> { ["alpha"] = "16", ["layer"] = "1", ["memory"] = "0", ["rank"] = "2", ["segment"] = "4", ["topk"] = "8" }, recorded.Options);
            using var loaded = (MemorizingMethod)TrainableMethods.Load(model, folder);
            var want = Values(saved);
            var got = Values(loaded);
            for (int i = 0; i < want.Length; i++) Assert.Equal(want[i], got[i]);
            var document = Document(81);
            using (var s1 = saved.OpenSession())
            using (var s2 = loaded.OpenSession())
                Assert.Equal(s1.Feed(document), s2.Feed(document));

            using var focused = new MemorizingMethod(model, Focused());
            Assert.Contains("'memorizing' adapter, not a 'focused-transformer' one", Assert.Throws<ModelFormatException>(() => focused.LoadAdapter(folder)).Message);
            using var otherTopK = new MemorizingMethod(model, new MemorizingConfig(4, 1, 3, 2, 16, true));
            Assert.Contains("topk=8", Assert.Throws<ModelFormatException>(() => otherTopK.LoadAdapter(folder)).Message);
            using var txl = new TransformerXlMethod(model, new TransformerXlConfig(4, 2, 16));
            txl.SaveAdapter(other);
            Assert.Contains("'transformer-xl' adapter, not a 'memorizing' one", Assert.Throws<ModelFormatException>(() => saved.LoadAdapter(other)).Message);
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
        var (weights, model) = Base(82);
        using var owned = weights;
        MemorizingMethod Make(bool gated, params (string Key, string Value)[] given) =>
            MemorizingMethod.Create(model, new MethodOptions(gated ? "memorizing" : "focused-transformer", given.ToDictionary(g => g.Key, g => g.Value)), 0, gated);
        Assert.Contains("segment", Assert.Throws<MethodOptionException>(() => Make(true, ("segment", "65"))).Message);
        Assert.Contains("layer", Assert.Throws<MethodOptionException>(() => Make(true, ("layer", "2"))).Message);
        Assert.Contains("topk", Assert.Throws<MethodOptionException>(() => Make(false, ("topk", "-1"))).Message);
        Assert.Contains("negatives", Assert.Throws<MethodOptionException>(() => Make(false, ("negatives", "x"))).Message);
        Assert.Contains("memory", Assert.Throws<MethodOptionException>(() => Make(true, ("memory", "-1"))).Message);
        using (var defaults = Make(false))
        {
            Assert.Equal("32", defaults.Options["segment"]);
            Assert.Equal("1", defaults.Options["layer"]);
            Assert.Equal("1", defaults.Options["negatives"]);
        }
        foreach (var descriptor in new[] { MemorizingMethod.Descriptor, MemorizingMethod.FocusedDescriptor })
        {
            var given = new MethodOptions(descriptor.Name, new Dictionary<string, string> { ["segment"] = "6", ["rank"] = "3" });
            using var described = (MemorizingMethod)descriptor.Create(model, given, 0);
            given.RejectUnknown(descriptor.Options.Select(o => o.Name));
            Assert.Equal(descriptor.Options.Select(o => o.Name).Order(), given.Resolved.Keys.Order());
            Assert.Equal(given.Resolved, described.Options);
            using var replica = (MemorizingMethod)described.CreateReplica()!;
            Assert.Equal(described.Options, replica.Options);
            Assert.Equal(described.Parameters.Select(p => p.Parameter.Value.ShapeString), replica.Parameters.Select(p => p.Parameter.Value.ShapeString));
            Assert.Contains(TrainableMethods.All, d => d.Name == descriptor.Name);
        }
        using var m = new MemorizingMethod(model, Gated());
        Assert.Contains("at least 2 tokens", Assert.Throws<ArgumentException>(() => m.Accumulate([], [], 0)).Message);
        Assert.False(m.Parameters.Single(p => p.Parameter == m.Model.GateBias).Decay);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SessionLogProbsAgreeWithTheTrainingForward(bool gated)
    {
        var (weights, model) = Base(83);
        using var owned = weights;
        using var m = new MemorizingMethod(model, gated ? Gated() : Focused(), seed: 84);
        Prepare(m, 85);
        var document = Document(86, 18);   // 17 inputs: segments of 4, 4, 4, 4, 1
        var targets = document[1..];
        using var session = m.OpenSession();
        var logProbs = FeedInPieces(session, document, 5, 2, 7);
        Assert.True(double.IsNaN(logProbs[0]));
        Assert.Equal(m.Evaluate(document, targets).Loss, SegmentLossFromLogProbs(logProbs, targets, L), 4);
        var memories = Memories(m, document, null);
        using var tape = new Tape(model.Accelerator);
        using var noGrad = tape.NoGrad();
        for (int start = 0, s = 0; start < 17; start += L, s++)
        {
            int length = Math.Min(L, 17 - start);
            var logits = Logits(model, tape, m.Model.Segment(tape, document.AsSpan(start, length), memories[s], out _, out _));
            for (int t = 0; t < length; t++)
                Assert.Equal(LogProbs.At(logits.AsSpan(t * Vocab, Vocab), document[start + t + 1]), logProbs[start + t + 1], 4);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void GenerationContinuesTheStreamAcrossSegments(bool gated)
    {
        var (weights, model) = Base(96);
        using var owned = weights;
        using var m = new MemorizingMethod(model, gated ? Gated() : Focused(), seed: 97);
        Prepare(m, 98);
        var document = Document(99, 10);
        using var session = m.OpenSession();
        session.Prefill(document);
        TrainedMethodChecks.GenerationContinuesTheStream(m, session, document, newTokens: 5);
        Assert.Equal(12, ((MemorizingSession)session).MemoryRows);   // 15 tokens: three complete segments stored

        using var bounded = new MemorizingMethod(model, (gated ? Gated() : Focused()) with { MemoryRows = 6 }, seed: 97);
        using var boundedSession = bounded.OpenSession();
        var logProbs = boundedSession.Feed([.. document, .. document]);
        Assert.Equal(6, ((MemorizingSession)boundedSession).MemoryRows);
        Assert.All(logProbs.Skip(1), p => Assert.True(double.IsFinite(p)));
        Assert.Equal(bounded.Evaluate([.. document, .. document], [.. document[1..], .. document]).Loss,
            SegmentLossFromLogProbs(logProbs, [.. document[1..], .. document], L), 4);
    }

    [Fact]
    public void TheTrainerRunsCrossbatchTrainingOnSideBySideWorkersAsOnOneThread()
    {
        var (weights, model) = Base(100);
        using var owned = weights;
        var documents = Enumerable.Range(0, 4).Select(i => Document(101 + i, 3 * L + 1)).ToArray();
        float[][] Trained(int workers)
        {
            string folder = TempFolder($"mem-trainer-{workers}");
            try
            {
                using var m = TrainableMethods.Create("focused-transformer:segment=4:topk=3:rank=2:negatives=1", model, 102);
                var options = new TrainingOptions { TotalSteps = 3, DocumentsPerStep = 2, PeakLearningRate = 1e-2f, WarmupSteps = 1, Seed = 7, Workers = workers };
                using (var trainer = new Trainer(m, new InMemoryTrainingData(documents, shuffleSeed: 103), options, folder))
                    Assert.True(trainer.Run().Completed);
                return Values(m);
            }
            finally
            {
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            }
        }
        var one = Trained(1);
        var two = Trained(2);
        for (int i = 0; i < one.Length; i++) Check.Close(one[i], two[i], 1e-6, 1e-5, $"parameter {i}");
        Assert.Contains(one, p => p.Any(x => x != 0));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TrainingLowersTheLossOnARepetitiveTask(bool gated)
    {
        var (weights, model) = Base(87);
        using var owned = weights;
        using var m = new MemorizingMethod(model, gated ? Gated(topK: 4) : Focused(topK: 4), seed: 88);
        var documents = RepetitiveDocuments(89, count: 4, period: L, length: 3 * L + 1);
        double before = MeanLoss((d, t) => m.Evaluate(d, t), documents);
        Train(m, documents, steps: 40, learningRate: 2e-2f);
        double after = MeanLoss((d, t) => m.Evaluate(d, t), documents);
        Assert.True(after < 0.8 * before, $"{m.Name} loss {before:F3} -> {after:F3}");
    }
}
