using UioLlm.Kernels;
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

/// <summary>
/// Activation Beacon on a base with local (sliding-window) layers: in a local layer the raw tokens keep the base's
/// window (counted over [kept beacons ; raw tokens]), the beacons keep the step-expansion rule. Gradients, the
/// session/training parity, the defining property (raw K/V dropped, beacons kept) and a short fit.
/// </summary>
public sealed class ActivationBeaconLocalTests
{
    private const int Window = 8;

    /// <summary>Like the demo's base: the first layers local with a window of 2, the last one global.</summary>
    private static LlamaConfig Mixed(int localWindow = 2) => GradCheck.TinyConfig() with { Layers = 3, LocalLayers = 2, LocalWindow = localWindow };

    /// <summary>Every layer local (Mistral-style sliding window).</summary>
    private static LlamaConfig AllLocal(int localWindow = 2) => GradCheck.TinyConfig() with { LocalLayers = 2, LocalWindow = localWindow };

    private static ActivationBeaconMethod Create(LlamaModel model, string options = "window=8:ratio-min=2:ratio-max=4:ratio=2")
    {
        var (_, given) = MethodRegistry.ParseSpec(ActivationBeaconMethod.MethodName + ":" + options);
        return (ActivationBeaconMethod)ActivationBeaconMethod.Descriptor.Create(model, new MethodOptions(ActivationBeaconMethod.MethodName, given), 0);
    }

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

    /// <summary>Next-token logits of every input, window by window (every window but the last compressed).</summary>
    private static float[] Logits(ActivationBeaconModel model, int[] inputs, int ratio)
    {
        using var tape = new Tape(model.Base.Accelerator);
        using var _ = tape.NoGrad();
        var memory = new BeaconMemory(model.Base.Config.Layers);
        var all = new List<float>();
        for (int start = 0; start < inputs.Length; start += model.Window)
        {
            int w = Math.Min(model.Window, inputs.Length - start);
            var hidden = model.RunWindow(tape, inputs.AsSpan(start, w), memory, ratio, compress: start + w < inputs.Length);
            all.AddRange(model.Base.Head.Forward(tape, hidden).Value.ToArray());
        }
        return [.. all];
    }

    private static float[] BaseLogits(LlamaModel model, int[] ids)
    {
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        return model.Forward(tape, ids).Value.ToArray();
    }

    private static double MaxDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double d = 0;
        for (int i = 0; i < a.Length; i++) d = Math.Max(d, Math.Abs(a[i] - b[i]));
        return d;
    }

    [Fact]
    public void TheMaskOfALocalLayerIsTheBasesWindowForRawRowsAndStepExpansionForBeacons()
    {
        using var weights = GradCheck.RandomWeights(Mixed(localWindow: 3), seed: 501);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        var beacon = method.Model;
        var c = model.Config;
        const int kept = 5, ratio = 2, n = Window / ratio;
        int tq = Window + n, tk = kept + tq;
        for (int l = 0; l < c.Layers; l++)
        {
            var mask = beacon.MaskAt(l, n, ratio, kept);
            mask.Validate("test", tq, tk);
            var global = AttentionMask.StepExpansion(n, ratio, kept, memoryCausal: true);
            // The base's own mask over [kept beacons ; raw tokens], as its session decodes them.
            var decoder = c.DecoderMask(l, prefixLength: kept);
            for (int i = 0; i < tq; i++)
                for (int j = 0; j < tk; j++)
                {
                    bool expected = i < Window
                        ? c.IsLocal(l) ? j < kept + Window && decoder.IsVisible(0, c.Heads, i, j, Window, kept + Window) : global.IsVisible(0, c.Heads, i, j, tq, tk)
                        : global.IsVisible(0, c.Heads, i, j, tq, tk);
                    Assert.True(expected == mask.IsVisible(0, c.Heads, i, j, tq, tk), $"layer {l}, query {i}, key {j}: expected {expected}");
                }
        }
        // Raw token 0 of a local layer (window 3) sees the last two kept beacons, raw token 2 none; a beacon sees all of them.
        var local = beacon.MaskAt(0, n, ratio, kept);
        Assert.Equal(new[] { false, false, false, true, true }, Enumerable.Range(0, kept).Select(j => local.IsVisible(0, 1, 0, j, tq, tk)));
        Assert.DoesNotContain(true, Enumerable.Range(0, kept).Select(j => local.IsVisible(0, 1, 2, j, tq, tk)));
        Assert.All(Enumerable.Range(0, kept), j => Assert.True(local.IsVisible(0, 1, Window, j, tq, tk)));
        Assert.Throws<ArgumentOutOfRangeException>(() => beacon.MaskAt(c.Layers, n, ratio, kept));
        Assert.Throws<ArgumentOutOfRangeException>(() => beacon.MaskAt(0, 0, ratio, kept));
        Assert.Throws<ArgumentOutOfRangeException>(() => beacon.MaskAt(0, n, ratio, -1));
    }

    [Fact]
    public void RawRowsOfLocalLayersAreTheBasesOwnWhereNoBeaconIsInRange()
    {
        // Every layer local with a window of 2: two layers reach back two positions, so raw tokens 2.. of a window
        // see no kept beacon at all and equal the base's own sliding-window result on the whole stream; raw tokens
        // 0 and 1 reach the last kept beacons and differ from it. Window 0 (no beacons kept yet) is the base's own.
        using var weights = GradCheck.RandomWeights(AllLocal(), seed: 511);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 512, std: 0.2f);
        int[] inputs = new Rng(513).Ints(3 * Window, 0, 37);
        int vocab = model.Config.VocabSize;
        var beacon = Logits(method.Model, inputs, 2);
        var own = BaseLogits(model, inputs);
        for (int t = 0; t < inputs.Length; t++)
        {
            double d = MaxDifference(beacon.AsSpan(t * vocab, vocab), own.AsSpan(t * vocab, vocab));
            if (t < Window || t % Window >= 2) Assert.True(d < 1e-4, $"token {t}: the beacon model differs from the base by {d:G3} where no beacon is in range");
            else Assert.True(d > 1e-4, $"token {t}: the kept beacons in range changed nothing ({d:G3})");
        }
    }

    [Fact]
    public void RawKvOfEarlierWindowsIsDroppedAndOnlyTheBeaconsCarryWindowZero()
    {
        using var weights = GradCheck.RandomWeights(Mixed(), seed: 521);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 522);
        var beacon = method.Model;
        int[] a = new Rng(523).Ints(2 * Window, 0, 37);
        int[] b = (int[])a.Clone();
        b[2] = (a[2] + 5) % 37;
        int vocab = model.Config.VocabSize;
        float[] WindowOne(float[] logits) => logits.AsSpan(Window * vocab, Window * vocab).ToArray();

        // Window 1's raw tokens beyond the local layers' reach still see window 0 through the global layer's beacons ...
        var la = WindowOne(Logits(beacon, a, 2));
        var lb = WindowOne(Logits(beacon, b, 2));
        Assert.True(MaxDifference(la.AsSpan((Window - 1) * vocab), lb.AsSpan((Window - 1) * vocab)) > 1e-4,
            "the last token of window 1 did not notice a change of window 0 through the beacons");
        // ... W/alpha beacon rows are kept per compressed window ...
        using (var tape = new Tape(model.Accelerator))
        using (tape.NoGrad())
        {
            var memory = new BeaconMemory(model.Config.Layers);
            beacon.RunWindow(tape, a.AsSpan(0, Window), memory, 2, compress: true);
            beacon.RunWindow(tape, a.AsSpan(Window, Window), memory, 4, compress: true);
            Assert.Equal(Window / 2 + Window / 4, memory.Rows);
            Assert.Equal(2, memory.Windows);
        }
        // ... and with the beacons' output projections zeroed nothing of window 0 is left: no raw K/V.
        foreach (var layer in beacon.Layers) layer.O?.Weight.Value.Span.Clear();
        Assert.Equal(WindowOne(Logits(beacon, a, 2)), WindowOne(Logits(beacon, b, 2)));
        Assert.NotEqual(Logits(beacon, a, 2)[..(Window * vocab)], Logits(beacon, b, 2)[..(Window * vocab)]);
    }

    [Fact]
    public void AccumulateGradientsMatchFiniteDifferencesOnALocalBase()
    {
        using var weights = GradCheck.RandomWeights(Mixed(), seed: 531);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 532);
        var rng = new Rng(533);
        int[] document = rng.Ints(21, 0, 37);   // 20 inputs: windows of 8, 8 (both compressed) and 4
        int[] targets = document[1..];
        foreach (var p in method.Parameters) p.Parameter.ZeroGrad();
        var loss = method.Accumulate(document, targets, seed: 0, ratio: 2);
        Assert.Equal(3, loss.Units);
        Assert.Equal(loss.Loss, method.Loss(document, targets, 2).Loss, 5);
        var parameters = method.Parameters.Select(p => p.Parameter).ToList();
        foreach (var p in parameters)
        {
            var g = p.Grad!.ToArray();
            Assert.All(g, x => Assert.True(float.IsFinite(x), $"{p.Name}: a gradient is not finite"));
            Assert.True(g.Any(x => x != 0), $"{p.Name}: no gradient");
        }
        GradCheck.PerTensor(() => method.Loss(document, targets, 2).Loss, parameters, rng, 1e-2, 3e-2, "activation beacon, local base");
    }

    public static TheoryData<string> Bases() => ["mixed window 2", "mixed window 3", "all local window 3"];

    private static LlamaConfig BaseNamed(string name) => name switch
    {
        "mixed window 2" => Mixed(2),
        "mixed window 3" => Mixed(3),
        "all local window 3" => AllLocal(3),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown base"),
    };

    [Theory]
    [MemberData(nameof(Bases))]
    public void SessionMatchesTheTrainingForwardOnALocalBase(string baseName)
    {
        using var weights = GradCheck.RandomWeights(BaseNamed(baseName), seed: 541);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        Perturb(method, 542);
        int[] document = new Rng(543).Ints(3 * Window + 3, 0, 37);
        foreach (int ratio in new[] { 2, 4 })
        {
            var expected = method.Model.ScoreDocument(document, ratio);
            using var session = (ActivationBeaconSession)method.OpenSession(ratio);
            var got = new List<double>();
            int fed = 0;
            var pieces = new Rng(544 + ratio);
            while (fed < document.Length)
            {
                int take = Math.Min(pieces.Next(1, 6), document.Length - fed);
                got.AddRange(session.Feed(document.AsSpan(fed, take)));
                fed += take;
                Assert.Equal((fed - 1) / Window * (Window / ratio), session.BeaconRows);
            }
            Assert.True(double.IsNaN(got[0]));
            for (int t = 1; t < document.Length; t++)
                Assert.True(Math.Abs(expected[t] - got[t]) < 1e-4, $"{baseName}, ratio {ratio}, token {t}: training forward {expected[t]:G6}, session {got[t]:G6}");
        }
    }

    [Fact]
    public void AdamWLowersTheLossOfRecallingTheFirstWindowOnALocalBase()
    {
        using var weights = GradCheck.RandomWeights(Mixed(), seed: 551);
        var model = new LlamaModel(weights);
        using var method = Create(model);
        var (before, after) = ActivationBeaconTests.TrainRecall(method, Window, seed: 552);
        Assert.True(double.IsFinite(after) && after < 0.85 * before, $"loss went from {before:F3} to {after:F3}");
    }
}
