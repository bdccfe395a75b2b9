using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Methods.ActivationBeacon;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using UioLlm.Training.Methods.ActivationBeacon;
using UioLlm.Training.Optim;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>Activation Beacon (trained): gradients, its defining properties, adapters, the session and a short fit.</summary>
public sealed class ActivationBeaconTests
{
    private const int Window = 8;

    /// <summary>The method from its options as the registry builds it (unknown options refused).</summary>
    private static ActivationBeaconMethod Create(LlamaModel model, string options = "window=8:ratio-min=2:ratio-max=4:ratio=2")
    {
        var (_, given) = MethodRegistry.ParseSpec(ActivationBeaconMethod.MethodName + ":" + options);
        var parsed = new MethodOptions(ActivationBeaconMethod.MethodName, given);
        var method = (ActivationBeaconMethod)ActivationBeaconMethod.Descriptor.Create(model, parsed, 0);
        try
        {
            parsed.RejectUnknown(ActivationBeaconMethod.Descriptor.Options.Select(o => o.Name));
            return method;
        }
        catch
        {
            method.Dispose();
            throw;
        }
    }

    /// <summary>Moves every beacon parameter off its initial copy of the base (a trained-looking state).</summary>
    private static void Perturb(ActivationBeaconMethod method, int seed, float std = 0.05f)
    {
        var rng = new Rng(seed);
        foreach (var p in method.Parameters)
        {
            var span = p.Parameter.Value.Span;
            var noise = rng.Normal(span.Length, std);
            for (int i = 0; i < span.Length; i++) span[i] += noise[i];
        }
    }

    private static float[] Logits(ActivationBeaconModel model, int[] inputs, int ratio, BeaconMemory? memory = null)
    {
        using var tape = new Tape(model.Base.Accelerator);
        using var _ = tape.NoGrad();
        memory ??= new BeaconMemory(model.Base.Config.Layers);
        var all = new List<float>();
        for (int start = 0; start < inputs.Length; start += model.Window)
        {
            int w = Math.Min(model.Window, inputs.Length - start);
            var hidden = model.RunWindow(tape, inputs.AsSpan(start, w), memory, ratio, compress: start + w < inputs.Length);
            all.AddRange(model.Base.Head.Forward(tape, hidden).Value.ToArray());
        }
        return [.. all];
    }

    [Fact]
    public void AccumulateGradientsMatchFiniteDifferencesForEveryParameter()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 401);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 402);
        var rng = new Rng(403);
        int[] document = rng.Ints(21, 0, 37);   // 20 inputs: windows of 8, 8 (both compressed) and 4
        int[] targets = document[1..];
        targets[3] = -100;
        foreach (var p in method.Parameters) p.Parameter.ZeroGrad();
        var loss = method.Accumulate(document, targets, seed: 0, ratio: 2);
        Assert.Equal(3, loss.Units);
        Assert.Equal(19, loss.Tokens);
        Assert.Equal(loss.Loss, method.Loss(document, targets, 2).Loss, 5);
        var parameters = method.Parameters.Select(p => p.Parameter).ToList();
        Assert.Equal(1 + 4 * model.Config.Layers - 2, parameters.Count);   // the last layer: k and v only
        foreach (var p in parameters) Assert.True(p.Grad!.ToArray().Any(g => g != 0), $"{p.Name}: no gradient");
        GradCheck.PerTensor(() => method.Loss(document, targets, 2).Loss, parameters, rng, 1e-2, 3e-2, "activation beacon");
    }

    [Fact]
    public void RawKvOfEarlierWindowsIsDroppedWindowOneSeesWindowZeroOnlyThroughBeacons()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 411);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 412);
        var beacon = method.Model;
        int[] a = new Rng(413).Ints(2 * Window, 0, 37);
        int[] b = (int[])a.Clone();
        b[2] = (a[2] + 5) % 37;
        int vocab = model.Config.VocabSize;
        float[] WindowOne(float[] logits) => logits.AsSpan(Window * vocab, Window * vocab).ToArray();

        // With live beacons a change in window 0 reaches window 1 ...
        Assert.True(WindowOne(Logits(beacon, a, 2)).Zip(WindowOne(Logits(beacon, b, 2))).Max(p => Math.Abs(p.First - p.Second)) > 1e-4,
            "window 1 did not notice a change of window 0 through the beacons");
        // ... and with the beacons' output projections zeroed the beacon states carry no content, so window 1 is
        // independent of window 0: nothing else of window 0 (no raw K/V) is left.
        foreach (var layer in beacon.Layers) layer.O?.Weight.Value.Span.Clear();
        Assert.Equal(WindowOne(Logits(beacon, a, 2)), WindowOne(Logits(beacon, b, 2)));
        // Window 0 itself still sees its own change.
        Assert.NotEqual(Logits(beacon, a, 2)[..(Window * vocab)], Logits(beacon, b, 2)[..(Window * vocab)]);
    }

    [Fact]
    public void BeaconsRespectTheStepExpansionMask()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 421);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 422);
        var beacon = method.Model;
        int[] a = new Rng(423).Ints(Window, 0, 37);
        int[] b = (int[])a.Clone();
        b[5] = (a[5] + 7) % 37;   // raw token 5: beacons 0, 1 (ratio 2: spans [0, 2), [0, 4)) must not see it; 2 and 3 do
        (float[][] K, float[][] V) Beacons(int[] ids)
        {
            using var tape = new Tape(model.Accelerator);
            using var _ = tape.NoGrad();
            var memory = new BeaconMemory(model.Config.Layers);
            beacon.RunWindow(tape, ids, memory, 2, compress: true);
            Assert.Equal(Window / 2, memory.Rows);
            return ([.. Enumerable.Range(0, model.Config.Layers).Select(l => memory.KeysOf(l)[0].Value.ToArray())],
                [.. Enumerable.Range(0, model.Config.Layers).Select(l => memory.ValuesOf(l)[0].Value.ToArray())]);
        }
        var ma = Beacons(a);
        var mb = Beacons(b);
        int kvDim = model.Config.KvDim;
        for (int l = 0; l < model.Config.Layers; l++)
        {
            var ka = ma.K[l];
            var kb = mb.K[l];
            var va = ma.V[l];
            var vb = mb.V[l];
            for (int i = 0; i < Window / 2; i++)
            {
                double diff = 0;
                for (int e = 0; e < kvDim; e++)
                    diff = Math.Max(diff, Math.Max(Math.Abs(ka[i * kvDim + e] - kb[i * kvDim + e]), Math.Abs(va[i * kvDim + e] - vb[i * kvDim + e])));
                if (i < 2) Assert.True(diff == 0, $"layer {l} beacon {i} saw raw token 5 (difference {diff:G3})");
                else if (l > 0) Assert.True(diff > 1e-5, $"layer {l} beacon {i} did not see raw token 5");
            }
        }
    }

    [Fact]
    public void SessionHoldsWOverAlphaBeaconRowsPerWindowAndMatchesTheTrainingForward()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 431);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 432);
        int[] document = new Rng(433).Ints(3 * Window + 3, 0, 37);
        foreach (int ratio in new[] { 2, 4 })
        {
            var expected = method.Model.ScoreDocument(document, ratio);
            using var session = (ActivationBeaconSession)method.OpenSession(ratio);
            var got = new List<double>();
            int fed = 0;
            var pieces = new Rng(434 + ratio);
            while (fed < document.Length)
            {
                int take = Math.Min(pieces.Next(1, 6), document.Length - fed);
                got.AddRange(session.Feed(document.AsSpan(fed, take)));
                fed += take;
                // A window is compressed when the token after it arrives: W/alpha rows for every window before the current one.
                Assert.Equal((fed - 1) / Window * (Window / ratio), session.BeaconRows);
                Assert.Equal(2L * model.Config.Layers * (session.BeaconRows + session.WindowTokens) * model.Config.KvDim * sizeof(float), session.KvBytes);
            }
            Assert.True(double.IsNaN(got[0]));
            for (int t = 1; t < document.Length; t++)
                Assert.True(Math.Abs(expected[t] - got[t]) < 1e-4, $"ratio {ratio}, token {t}: training forward {expected[t]:G6}, session {got[t]:G6}");
            // The training loss is the mean over each window of the same log-probabilities.
            var loss = method.Loss(document, document[1..], ratio);
            double sum = 0;
            for (int start = 0; start < document.Length - 1; start += Window)
            {
                int w = Math.Min(Window, document.Length - 1 - start);
                sum -= Enumerable.Range(start + 1, w).Average(t => expected[t]);
            }
            Assert.Equal(sum, loss.Loss, 4);
        }
    }

    [Fact]
    public void AdapterRoundTripsAndForeignAdaptersAreRefused()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 441);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 442);
        string root = Path.Combine(Path.GetTempPath(), "uiollm-beacon-" + Guid.NewGuid().ToString("N"));
        try
        {
            string folder = Path.Combine(root, "a");
            method.SaveAdapter(folder, "tiny");
            using var fresh = Create(model);
            fresh.LoadAdapter(folder);
            foreach (var (x, y) in method.Parameters.Zip(fresh.Parameters))
                Assert.Equal(x.Parameter.Value.ToArray(), y.Parameter.Value.ToArray());
            int[] document = new Rng(443).Ints(2 * Window + 2, 0, 37);
            using (var s1 = method.OpenSession())
            using (var s2 = fresh.OpenSession())
                Assert.Equal(s1.Feed(document), s2.Feed(document));

            // Rebuilt from the folder alone (the recorded options).
            if (!TrainableMethods.All.Any(m => m.Name == ActivationBeaconMethod.MethodName)) TrainableMethods.Register(ActivationBeaconMethod.Descriptor);
            using (var loaded = TrainableMethods.Load(model, folder))
                Assert.Equal(ActivationBeaconMethod.MethodName, loaded.Name);

            // Other options, another method: refused with a typed error naming the difference.
            using var other = Create(model, "window=8:ratio-min=2:ratio-max=4:ratio=4");
            var e = Assert.Throws<ModelFormatException>(() => other.LoadAdapter(folder));
            Assert.Contains("ratio=2", e.Message);
            string foreign = Path.Combine(root, "b");
            TrainableMethods.SaveAdapter(foreign, "rmt", new Dictionary<string, string>(), [("rmt.memory", method.Model.BeaconEmbedding.Value)], null, model.Config);
            e = Assert.Throws<ModelFormatException>(() => method.LoadAdapter(foreign));
            Assert.Contains("'rmt'", e.Message);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void OptionsAndDocumentsAreChecked()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 451);
        var model = new LlamaModel(weights);
        Assert.Throws<MethodOptionException>(() => Create(model, "window=8:ratio=3"));
        Assert.Throws<MethodOptionException>(() => Create(model, "window=8:ratio-min=3"));
        Assert.Throws<MethodOptionException>(() => Create(model, "window=6:ratio-min=4:ratio-max=4:ratio=2"));
        Assert.Throws<MethodOptionException>(() => Create(model, "window=8:ratios=2"));
        using var method = Create(model);
        Assert.Equal(new[] { 2, 4 }, method.TrainingRatios);
        var drawn = Enumerable.Range(0, 40).Select(method.RatioFor).ToHashSet();
        Assert.Equal(new[] { 2, 4 }, drawn.Order());
        Assert.Throws<ArgumentException>(() => method.Accumulate([1], [], 0));
        Assert.Throws<ArgumentException>(() => method.Accumulate([1, 2, 3], [2], 0));
        Assert.Equal(0, method.Accumulate([1, 2, 3], [-100, -100], 0).Units);
        using var replica = method.CreateReplica()!;
        Assert.Equal(method.Options, ((ActivationBeaconMethod)replica).Options);
    }

    [Fact]
    public void AdamWLowersTheLossOfRecallingTheFirstWindow()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 461);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        var (before, after) = TrainRecall(method, Window, seed: 462);
        Assert.True(after < 0.85 * before, $"loss went from {before:F3} to {after:F3}");
    }

    /// <summary>
    /// 40 AdamW steps on four documents whose window 1 repeats window 0 (only window 1 scored: only the beacons can
    /// carry it over); the loss before and after. Shared by the local-layer tests.
    /// </summary>
    internal static (double Before, double After) TrainRecall(ActivationBeaconMethod method, int window, int seed)
    {
        using var optimizer = new AdamW(method.Parameters, new AdamWSettings(WeightDecay: 0f));
        var rng = new Rng(seed);
        var documents = Enumerable.Range(0, 4).Select(_ =>
        {
            var first = rng.Ints(window, 0, 37);
            return first.Concat(first).Append(first[0]).ToArray();
        }).ToArray();
        double Total(Func<int[], int[], DocumentLoss> f) => documents.Sum(d =>
        {
            var targets = d[1..];
            for (int t = 0; t < window - 1; t++) targets[t] = -100;
            return f(d, targets).Loss;
        });
        double before = Total((d, t) => method.Loss(d, t, 2));
        for (int step = 0; step < 40; step++)
        {
            foreach (var p in method.Parameters) p.Parameter.ZeroGrad();
            Total((d, t) => method.Accumulate(d, t, step));
            optimizer.Step(3e-2f);
        }
        return (before, Total((d, t) => method.Loss(d, t, 2)));
    }
}
