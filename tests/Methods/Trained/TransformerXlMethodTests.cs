using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using static UioLlm.Tests.Methods.Trained.RecurrentMethodSupport;

namespace UioLlm.Tests.Methods.Trained;

public sealed class TransformerXlMethodTests
{
    private const int L = 4;
    private static readonly TransformerXlConfig Small = new(SegmentLength: L, Rank: 2, Alpha: 4);

    private static int[] Document(int seed, int length = 15) => new Rng(seed).Ints(length, 0, Vocab);

    /// <summary>
    /// The stop-gradient reference: sum over segments of the mean cross-entropy, with every segment's cache fixed to
    /// <paramref name="caches"/> (computed once at the current parameters). Its gradient is what Transformer-XL trains with.
    /// </summary>
    private static double FrozenCacheLoss(TransformerXlMethod txl, int[] document, int[] targets, IReadOnlyList<TransformerXlCache> caches)
    {
        using var tape = new Tape(txl.Base.Accelerator);
        using var noGrad = tape.NoGrad();
        double total = 0;
        for (int start = 0, s = 0; start < targets.Length; start += L, s++)
        {
            int length = Math.Min(L, targets.Length - start);
            var hidden = txl.Model.Segment(tape, document.AsSpan(start, length), s == 0 ? null : caches[s - 1], out _);
            var segmentTargets = targets.AsSpan(start, length);
            if (segmentTargets.ToArray().Any(t => t != -100)) total += txl.Base.Head.CrossEntropy(tape, hidden, segmentTargets).Value.ToArray()[0];
        }
        return total;
    }

    /// <summary>Every segment's cache (keys and values) at the current parameters.</summary>
    private static List<TransformerXlCache> Caches(TransformerXlMethod txl, int[] document)
    {
        var caches = new List<TransformerXlCache>();
        using var tape = new Tape(txl.Base.Accelerator);
        using var noGrad = tape.NoGrad();
        for (int start = 0; start < document.Length - 1; start += L)
        {
            txl.Model.Segment(tape, document.AsSpan(start, Math.Min(L, document.Length - 1 - start)), caches.Count == 0 ? null : caches[^1], out var kv);
            caches.Add(TransformerXlCache.Capture(kv));
        }
        return caches;
    }

    [Fact]
    public void AccumulateMatchesFiniteDifferencesOfTheStopGradientLoss()
    {
        var (weights, model) = Base(31);
        using var owned = weights;
        using var txl = new TransformerXlMethod(model, Small, seed: 32);
        Randomise(txl, 33);
        var document = Document(34);
        var targets = Targets(document, 0, 9, 10);
        ZeroGrads(txl);
        var result = txl.Accumulate(document, targets, seed: 0);
        Assert.Equal(4, result.Units);
        Assert.Equal(11, result.Tokens);
        Assert.Equal(txl.Evaluate(document, targets).Loss, result.Loss, 5);
        Assert.Equal(8, txl.Parameters.Count);   // (q, v) x (A, B) x 2 layers
        var caches = Caches(txl, document);
        try
        {
            Assert.Equal(result.Loss, FrozenCacheLoss(txl, document, targets, caches), 5);
            GradCheck.PerTensor(() => FrozenCacheLoss(txl, document, targets, caches), txl.Parameters.Select(p => p.Parameter).ToList(), new Rng(35), 1e-2, 3e-2,
                "Transformer-XL (cache held fixed)");
        }
        finally
        {
            foreach (var c in caches) c.Dispose();
        }
    }

    [Fact]
    public void LaterSegmentsReadTheCacheButNoGradientFlowsThroughIt()
    {
        var (weights, model) = Base(36);
        using var owned = weights;
        using var txl = new TransformerXlMethod(model, Small, seed: 37);
        Randomise(txl, 38);
        var a = Document(39, 13);
        var b = (int[])a.Clone();
        for (int i = L; i < 2 * L; i++) b[i] = (a[i] + 3) % Vocab;   // only segment 1 differs

        // Segment 2's predictions depend on segment 1 (through the cache) ...
        using (var sa = txl.OpenSession())
        using (var sb = txl.OpenSession())
        {
            var pa = sa.Feed(a);
            var pb = sb.Feed(b);
            Assert.True(Math.Abs(pa[2 * L + 2] - pb[2 * L + 2]) > 1e-4);
            for (int i = 1; i < L; i++) Assert.Equal(pa[i], pb[i]);   // segment 0's own predictions do not
        }

        // ... but the gradient of segment 2's loss is the gradient with the cache as a constant.
        var targets = Targets(a, 0, 1, 2, 3, 4, 5, 6, 7);
        ZeroGrads(txl);
        Assert.Equal(1, txl.Accumulate(a, targets, 0).Units);
        var trained = Grads(txl);
        var caches = Caches(txl, a);
        try
        {
            ZeroGrads(txl);
            using (var tape = new Tape(model.Accelerator))
            {
                var hidden = txl.Model.Segment(tape, a.AsSpan(2 * L, L), caches[1], out _);
                tape.Backward(model.Head.CrossEntropy(tape, hidden, targets.AsSpan(2 * L, L)));
            }
            var reference = Grads(txl);
            for (int i = 0; i < trained.Length; i++) Check.Close(reference[i], trained[i], 1e-6, 1e-5, $"parameter {i}");

            // The full derivative (cache included) is another vector: the cache path was cut, not merely small.
            var p = txl.Parameters[1].Parameter;   // layer 0 q_proj B: moves the keys/values of segment 1 too
            var keep = p.Value.ToArray();
            var u = new Rng(40).Normal(keep.Length);
            double Full(float eps)
            {
                p.Value.CopyFrom(keep.Select((v, i) => v + eps * u[i]).ToArray());
                double loss = txl.Evaluate(a, targets).Loss;
                p.Value.CopyFrom(keep);
                return loss;
            }
            double fullDerivative = (Full(1e-2f) - Full(-1e-2f)) / 2e-2;
            double truncated = trained[1].Select((g, i) => (double)g * u[i]).Sum();
            Assert.True(Math.Abs(fullDerivative - truncated) > 0.05, $"full {fullDerivative:G6} vs stop-gradient {truncated:G6}");
        }
        finally
        {
            foreach (var c in caches) c.Dispose();
        }
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        var (weights, model) = Base(41);
        using var owned = weights;
        string folder = TempFolder("txl"), other = TempFolder("txl-rmt"), uioFolder = TempFolder("txl-uio");
        try
        {
            using var saved = TransformerXlMethod.Create(model, new MethodOptions("transformer-xl", new Dictionary<string, string> { ["segment"] = "4", ["rank"] = "2" }), 42);
            Randomise(saved, 43);
            saved.SaveAdapter(folder);
            var recorded = TrainableMethods.ReadAdapterMethod(folder)!.Value;
            Assert.Equal("transformer-xl", recorded.Method);
            Assert.Equal(new Dictionary<string, string> { ["alpha"] = "16", ["rank"] = "2", ["segment"] = "4" }, recorded.Options);

            using var loaded = TransformerXlMethod.Descriptor.Create(model, new MethodOptions("transformer-xl", recorded.Options), 44);
            loaded.LoadAdapter(folder);
            var want = Values(saved);
            var got = Values(loaded);
            for (int i = 0; i < want.Length; i++) Assert.Equal(want[i], got[i]);
            var document = Document(45);
            using (var s1 = saved.OpenSession())
            using (var s2 = loaded.OpenSession())
                Assert.Equal(s1.Feed(document), s2.Feed(document));

            using var longer = new TransformerXlMethod(model, new TransformerXlConfig(8, 2, 16));
            Assert.Contains("segment=8", Assert.Throws<ModelFormatException>(() => longer.LoadAdapter(folder)).Message);
            using var rmt = new RmtMethod(model, new RmtConfig(4, 2, 2, 16));
            rmt.SaveAdapter(other);
            Assert.Contains("'rmt' adapter, not a 'transformer-xl' one", Assert.Throws<ModelFormatException>(() => saved.LoadAdapter(other)).Message);
            using var uio = new UioModel(model, new UioConfig { SegmentLength = 4, MemoryTokens = 2, EncoderRank = 2, EncoderAlpha = 4, TransferRank = 2, TransferAlpha = 4 });
            UioAdapter.Save(uio, uioFolder);
            Assert.Contains("not a 'transformer-xl' adapter", Assert.Throws<ModelFormatException>(() => saved.LoadAdapter(uioFolder)).Message);
        }
        finally
        {
            foreach (var f in new[] { folder, other, uioFolder })
                if (Directory.Exists(f)) Directory.Delete(f, recursive: true);
        }
    }

    [Fact]
    public void OptionsAndDocumentsAreChecked()
    {
        var (weights, model) = Base(46);
        using var owned = weights;
        TransformerXlMethod Make(params (string Key, string Value)[] given) =>
            TransformerXlMethod.Create(model, new MethodOptions("transformer-xl", given.ToDictionary(g => g.Key, g => g.Value)), 0);
        Assert.Contains("segment", Assert.Throws<MethodOptionException>(() => Make(("segment", "33"))).Message);
        Assert.Contains("rank", Assert.Throws<MethodOptionException>(() => Make(("rank", "0"))).Message);
        Assert.Contains("alpha", Assert.Throws<MethodOptionException>(() => Make(("alpha", "x"))).Message);
        using (var defaults = Make()) Assert.Equal("32", defaults.Options["segment"]);
        var given = new MethodOptions("transformer-xl", new Dictionary<string, string> { ["segment"] = "6", ["rank"] = "3", ["alpha"] = "0.5" });
        using (var described = TransformerXlMethod.Descriptor.Create(model, given, 0))
        {
            given.RejectUnknown(TransformerXlMethod.Descriptor.Options.Select(o => o.Name));
            Assert.Equal(TransformerXlMethod.Descriptor.Options.Select(o => o.Name).Order(), given.Resolved.Keys.Order());
            Assert.Equal(given.Resolved, ((TransformerXlMethod)described).Options);
            using var replica = (TransformerXlMethod)described.CreateReplica()!;
            Assert.Equal(((TransformerXlMethod)described).Options, replica.Options);
            Assert.Equal(described.Parameters.Select(p => p.Parameter.Value.ShapeString), replica.Parameters.Select(p => p.Parameter.Value.ShapeString));
        }
        using var txl = new TransformerXlMethod(model, Small);
        Assert.Contains("at least 2 tokens", Assert.Throws<ArgumentException>(() => txl.Accumulate([], [], 0)).Message);
    }

    [Fact]
    public void SessionLogProbsAgreeWithTheTrainingForward()
    {
        var (weights, model) = Base(47);
        using var owned = weights;
        using var txl = new TransformerXlMethod(model, Small, seed: 48);
        var document = Document(49, 18);   // 17 inputs: segments of 4, 4, 4, 4, 1

        // Fresh (LoRA B = 0): exactly the base's inference recurrence.
        using (var fresh = txl.OpenSession())
        using (var plain = new RecurrenceSession(model, L))
            Assert.Equal(plain.Feed(document), fresh.Feed(document));

        Randomise(txl, 50);
        var targets = document[1..];
        using var session = txl.OpenSession();
        var logProbs = FeedInPieces(session, document, 5, 2, 7);
        Assert.Equal(txl.Evaluate(document, targets).Loss, SegmentLossFromLogProbs(logProbs, targets, L), 4);
        using var plainAdapted = new RecurrenceSession(model, L);
        Assert.True(Math.Abs(plainAdapted.Feed(document)[10] - logProbs[10]) > 1e-5, "the adapter changes the predictions");

        using var tape = new Tape(model.Accelerator);
        using var noGrad = tape.NoGrad();
        TransformerXlCache? previous = null;
        try
        {
            for (int start = 0; start < 17; start += L)
            {
                int length = Math.Min(L, 17 - start);
                var logits = Logits(model, tape, txl.Model.Segment(tape, document.AsSpan(start, length), previous, out var kv));
                for (int t = 0; t < length; t++)
                    Assert.Equal(LogProbs.At(logits.AsSpan(t * Vocab, Vocab), document[start + t + 1]), logProbs[start + t + 1], 4);
                var next = TransformerXlCache.Capture(kv);
                previous?.Dispose();
                previous = next;
            }
        }
        finally
        {
            previous?.Dispose();
        }
    }

    [Fact]
    public void TrainingLowersTheLossOnARepetitiveTask()
    {
        var (weights, model) = Base(51);
        using var owned = weights;
        using var txl = new TransformerXlMethod(model, Small, seed: 52);
        var documents = RepetitiveDocuments(53, count: 4, period: L, length: 3 * L + 1);
        double before = MeanLoss((d, t) => txl.Evaluate(d, t), documents);
        Train(txl, documents, steps: 60, learningRate: 2e-2f);
        double after = MeanLoss((d, t) => txl.Evaluate(d, t), documents);
        Assert.True(after < 0.6 * before, $"Transformer-XL loss {before:F3} -> {after:F3}");
    }
}
