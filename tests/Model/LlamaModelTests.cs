using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

public sealed class LlamaModelTests
{
    private static float[] Logits(LlamaModel model, int[] ids)
    {
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        return model.Forward(tape, ids).Value.ToArray();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ForwardMatchesThePlainReference(bool tied)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(tied), seed: 11);
        int[] ids = [5, 0, 36, 12, 12, 7, 1];
        var expected = LlamaReference.Logits(weights, ids);
        var actual = Logits(new LlamaModel(weights), ids);
        Check.Close(expected.Cast<double>().ToArray(), actual, 1e-4, 1e-4, tied ? "tied-head logits" : "logits");
    }

    [Fact]
    public void AFrozenModelFreezesItsWeightsAndATrainableOneUnfreezesThem()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 19);
        var frozen = new LlamaModel(weights);
        int[] ids = [1, 5, 2, 7, 3, 3, 9, 4, 6, 8];
        var before = Logits(frozen, ids);
        Assert.All(weights.Named(), w => Assert.True(w.Tensor.IsFrozen, w.Name));
        // Kernels refuse to change a frozen weight (its pre-packed panels would go stale).
        Assert.Throws<ArgumentException>(() => weights.Accelerator.Kernels.Fill(weights.Layers[0].Wq, 0f));
        Assert.Equal(before, Logits(frozen, ids)); // the second pass reads the kept panels

        _ = new LlamaModel(weights, trainable: true);
        Assert.All(weights.Named(), w => Assert.False(w.Tensor.IsFrozen, w.Name));
        weights.Accelerator.Kernels.Scale(weights.Layers[0].Wq, 0.5f, weights.Layers[0].Wq);
        var changed = Logits(new LlamaModel(weights), ids);
        Assert.NotEqual(before, changed);
    }

    [Fact]
    public void CachedPrefillAndDecodeEqualTheFullForward()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 12);
        var model = new LlamaModel(weights);
        int[] ids = [3, 9, 27, 1, 30, 2, 14, 8];
        var full = Logits(model, ids);
        int vocab = model.Config.VocabSize;
        using var cache = model.NewCache(16);
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        var prefill = model.Forward(tape, ids.AsSpan(0, 5), cache).Value.ToArray();
        Check.Close(full.AsSpan(0, 5 * vocab), prefill, 1e-5, 1e-4, "prefill logits");
        for (int t = 5; t < ids.Length; t++)
        {
            var step = model.ForwardLast(tape, ids.AsSpan(t, 1), cache).Value.ToArray();
            Check.Close(full.AsSpan(t * vocab, vocab), step, 1e-5, 1e-4, $"decode logits at {t}");
        }
        Assert.Equal(ids.Length, cache.Length);
    }

    [Theory]
    [InlineData(64, false)]
    [InlineData(3, false)]
    [InlineData(2, true)]
    public void TapeFreeInferenceEqualsTheTapeForward(int rows, bool withLora)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 18);
        var model = new LlamaModel(weights);
        if (withLora)
        {
            model.AttachLora(2, 4, 5, "all");
            var rng = new Rng(19);
            foreach (var p in model.TrainableParameters()) p.Value.CopyFrom(rng.Normal(p.Value.Length, 0.2f));
        }
        int[] ids = [3, 9, 27, 1, 30, 2, 14, 8];
        int vocab = model.Config.VocabSize;
        var full = Logits(model, ids);
        using var cache = model.NewCache(16);
        using var buffers = model.NewInferenceBuffers(rows);
        var prefill = model.Infer(ids.AsSpan(0, 7), cache, buffers).ToArray();
        Check.Close(full.AsSpan(6 * vocab, vocab), prefill, 1e-5, 1e-4, $"chunked prefill (rows {rows}) logits");
        var step = model.Infer(ids.AsSpan(7, 1), cache, buffers).ToArray();
        Check.Close(full.AsSpan(7 * vocab, vocab), step, 1e-5, 1e-4, "decode logits");
        Assert.Equal(8, cache.Length);
        Assert.Throws<InvalidOperationException>(() => model.Infer(new int[9], cache, buffers));
    }

    [Fact]
    public void FreshLoraLeavesTheModelUnchangedAndOnlyAdaptersTrain()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 13);
        var model = new LlamaModel(weights);
        int[] ids = [4, 8, 15, 16, 23, 35];
        var before = Logits(model, ids);
        var adapters = model.AttachLora(rank: 3, alpha: 6, seed: 1, "q_proj", "v_proj");
        Assert.Equal(2 * model.Config.Layers, adapters.Count);
        Assert.All(adapters, a => Assert.Equal(2f, a.Scale));
        Assert.Equal(before, Logits(model, ids));
        Assert.Equal(4 * model.Config.Layers, model.TrainableParameters().Count());
        model.DetachLora();
        Assert.Empty(model.TrainableParameters());
        var e = Assert.Throws<ArgumentException>(() => model.AttachLora(2, 4, 0, "qkv"));
        Assert.Contains("qkv", e.Message);
    }

    [Fact]
    public void LoraGradientsMatchFiniteDifferencesOnATinyModel()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 14);
        var model = new LlamaModel(weights);
        model.AttachLora(rank: 2, alpha: 4, seed: 2, "all");
        var rng = new Rng(15);
        foreach (var p in model.TrainableParameters().Where(p => p.Name!.EndsWith("lora_B.weight", StringComparison.Ordinal)))
            p.Value.CopyFrom(rng.Normal(p.Value.Length, 0.3f));
        CheckLoraGradients(model, [1, 5, 9, 2, 33, 17, 4, 4, 20], rng, "tiny model");
    }

    [DataFact]
    public void LoraGradientsOnStories260KMatchFiniteDifferencesAndTheTapeFreesWhatItRecorded()
    {
        using var weights = GoldenGenerationTests.LoadStories260K();
        var model = new LlamaModel(weights);
        model.AttachLora(rank: 2, alpha: 2, seed: 3, "all");
        var rng = new Rng(16);
        foreach (var p in model.TrainableParameters().Where(p => p.Name!.EndsWith("lora_B.weight", StringComparison.Ordinal)))
            p.Value.CopyFrom(rng.Normal(p.Value.Length, 0.05f));
        var ids = GoldenGenerationTests.ExpectedIds().Take(25).ToArray();
        CheckLoraGradients(model, ids, rng, "stories260K");
    }

    private static void CheckLoraGradients(LlamaModel model, int[] tokens, Rng rng, string what)
    {
        var inputs = tokens[..^1];
        var targets = tokens[1..];
        var parameters = model.TrainableParameters().ToList();
        Assert.Equal(7 * 2 * model.Config.Layers, parameters.Count);
        foreach (var p in parameters) p.ZeroGrad();

        var tape = new Tape(model.Accelerator, "lm loss");
        var loss = model.Loss(tape, inputs, targets);
        Assert.True(tape.RecordedOps > 0);
        tape.Backward(loss);
        Assert.True(tape.OwnedTensors > 0);
        tape.Dispose();
        Assert.Equal(0, tape.OwnedTensors);
        Assert.Throws<TapeException>(() => loss.Value);

        double Eval()
        {
            using var t = new Tape(model.Accelerator);
            using var _ = t.NoGrad();
            return model.Loss(t, inputs, targets).Value.ToArray()[0];
        }
        GradCheck.PerTensor(Eval, parameters, rng, 1e-2, 3e-2, what);
    }

    [Fact]
    public void GenerationStopsAtStopTokensLimitsAndTheContextAndStreamsEveryToken()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 20);
        var model = new LlamaModel(weights);
        var generator = new Generator(model);
        var streamed = new List<int>();
        var sampled = new GenerationOptions { MaxNewTokens = 6, Temperature = 1f, TopP = 0.95f, Seed = 4, StopTokens = [] };
        var limited = generator.Generate([1, 2, 3], sampled, streamed.Add);
        Assert.Equal(StopReason.TokenLimit, limited.Reason);
        Assert.Equal(6, limited.Tokens.Length);
        Assert.Equal(limited.Tokens, streamed);
        Assert.Equal(limited.Tokens, generator.Generate([1, 2, 3], sampled).Tokens);        // seeded: repeats exactly

        int first = generator.Generate([1, 2, 3], new GenerationOptions { MaxNewTokens = 1, StopTokens = [] }).Tokens[0];
        var stopped = generator.Generate([1, 2, 3], new GenerationOptions { MaxNewTokens = 5, StopTokens = [first] });
        Assert.Equal(StopReason.StopToken, stopped.Reason);
        Assert.Empty(stopped.Tokens);

        var full = generator.Generate(new int[60], new GenerationOptions { MaxNewTokens = 10, StopTokens = [] });
        Assert.Equal(StopReason.ContextFull, full.Reason);
        Assert.Equal(64 - 60 + 1, full.Tokens.Length);   // the last token is sampled from the full context
        Assert.Empty(generator.Generate([1], new GenerationOptions { MaxNewTokens = 0 }).Tokens);
        Assert.Throws<ArgumentException>(() => generator.Generate(new int[65]));
    }

    [Fact]
    public void BadInputsGiveClearErrors()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 17);
        var model = new LlamaModel(weights);
        using var tape = new Tape(model.Accelerator);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(tape, [1, 37]));
        Assert.Contains("37", e.Message);
        Assert.Throws<ArgumentException>(() => model.Forward(tape, []));
        Assert.Throws<ArgumentException>(() => model.Loss(tape, [1, 2], [3]));

        using var cache = model.NewCache(4);
        using (tape.NoGrad())
        {
            model.Forward(tape, [1, 2, 3], cache);
            var full = Assert.Throws<InvalidOperationException>(() => model.Forward(tape, [4, 5], cache));
            Assert.Contains("capacity 4", full.Message);
        }
        model.AttachLora(2, 2, 0, "q_proj");
        using var recording = new Tape(model.Accelerator);
        using var cache2 = model.NewCache(4);
        var grad = Assert.Throws<InvalidOperationException>(() => model.Forward(recording, [1], cache2));
        Assert.Contains("NoGrad", grad.Message);
    }
}

public sealed class SamplerTests
{
    [Fact]
    public void GreedyPicksTheFirstMaximum()
    {
        var s = new Sampler();
        Assert.Equal(2, s.Sample([0.1f, 3f, 5f, 5f, -1f]));
        Assert.Equal(0, Sampler.ArgMax([float.NaN, float.NaN]));
    }

    [Fact]
    public void SamplingIsSeededAndFollowsTheDistribution()
    {
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.2f)];
        int[] Draw(int seed, float topP)
        {
            var s = new Sampler(temperature: 1f, topP: topP, seed: seed);
            return Enumerable.Range(0, 4000).Select(_ => s.Sample(logits)).ToArray();
        }
        var a = Draw(7, 1f);
        Assert.Equal(a, Draw(7, 1f));
        Assert.NotEqual(a, Draw(8, 1f));
        double[] freq = [.. Enumerable.Range(0, 3).Select(k => a.Count(x => x == k) / 4000.0)];
        Assert.InRange(freq[0], 0.46, 0.54);
        Assert.InRange(freq[1], 0.26, 0.34);
        Assert.InRange(freq[2], 0.17, 0.23);
        // top-p 0.7 keeps the two most likely tokens (0.5 + 0.3 >= 0.7), renormalised to 5/8 and 3/8.
        var nucleus = Draw(9, 0.7f);
        Assert.DoesNotContain(2, nucleus);
        Assert.InRange(nucleus.Count(x => x == 0) / 4000.0, 0.59, 0.66);
        Assert.All(Draw(10, 0.4f), x => Assert.Equal(0, x));
    }

    [Fact]
    public void BadSettingsThrow()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(temperature: -1f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(topP: 0f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(topP: 1.5f));
    }
}
