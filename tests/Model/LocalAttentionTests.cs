using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Baselines;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

/// <summary>Local layers (LlamaConfig.LocalLayers / LocalWindow): a causal sliding window in the first layers.</summary>
public sealed class LocalAttentionTests
{
    private static LlamaConfig Local(int window = 3, int layers = 1) => GradCheck.TinyConfig() with { LocalLayers = layers, LocalWindow = window };

    private static float[] Logits(LlamaModel model, int[] ids)
    {
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        return model.Forward(tape, ids).Value.ToArray();
    }

    private static readonly int[] Ids = [3, 9, 27, 1, 30, 2, 14, 8, 19, 5, 33];

    [Fact]
    public void ALocalLayerMatchesTheSlidingWindowReferenceAndDiffersFromGlobal()
    {
        using var weights = GradCheck.RandomWeights(Local(), seed: 70);
        var actual = Logits(new LlamaModel(weights), Ids);
        var expected = LlamaReference.Logits(weights, Ids);
        Check.Close(expected.Cast<double>().ToArray(), actual, 1e-4, 1e-4, "local-layer logits");

        // The same weights with every layer global: identical while the window covers every token (t < 3), different after.
        using var global = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 70);
        var globalLogits = Logits(new LlamaModel(global), Ids);
        int vocab = weights.Config.VocabSize;
        Check.Close(globalLogits.AsSpan(0, 3 * vocab), actual.AsSpan(0, 3 * vocab), 1e-5, 1e-4, "tokens inside the window");
        double difference = 0;
        for (int i = 3 * vocab; i < actual.Length; i++) difference = Math.Max(difference, Math.Abs(actual[i] - globalLogits[i]));
        Assert.True(difference > 1e-2, $"a local layer 0 should change the logits of tokens beyond its window (max difference {difference})");
    }

    [Theory]
    [InlineData(64)]
    [InlineData(3)]
    [InlineData(2)]
    public void CachedAndTapeFreeInferenceEqualTheTapeForward(int rows)
    {
        using var weights = GradCheck.RandomWeights(Local(window: 2), seed: 71);
        var model = new LlamaModel(weights);
        int vocab = model.Config.VocabSize;
        var full = Logits(model, Ids);

        using var cache = model.NewCache(16);
        using (var tape = new Tape(model.Accelerator))
        using (tape.NoGrad())
        {
            var prefill = model.Forward(tape, Ids.AsSpan(0, 6), cache).Value.ToArray();
            Check.Close(full.AsSpan(0, 6 * vocab), prefill, 1e-5, 1e-4, "cached prefill");
            for (int t = 6; t < Ids.Length; t++)
                Check.Close(full.AsSpan(t * vocab, vocab), model.ForwardLast(tape, Ids.AsSpan(t, 1), cache).Value.ToArray(), 1e-5, 1e-4, $"cached decode at {t}");
        }

        using var inferCache = model.NewCache(16);
        using var buffers = model.NewInferenceBuffers(rows);
        var last = model.Infer(Ids.AsSpan(0, 9), inferCache, buffers).ToArray();
        Check.Close(full.AsSpan(8 * vocab, vocab), last, 1e-5, 1e-4, $"tape-free prefill (rows {rows})");
        for (int t = 9; t < Ids.Length; t++)
            Check.Close(full.AsSpan(t * vocab, vocab), model.Infer(Ids.AsSpan(t, 1), inferCache, buffers).ToArray(), 1e-5, 1e-4, $"tape-free decode at {t}");
    }

    [Fact]
    public void MemoryStaysVisibleToALocalLayer()
    {
        // UIO's decoder: per layer a key/value prefix that every query of a global layer sees; a local layer's window counts positions over [prefix ; tokens].
        using var weights = GradCheck.RandomWeights(Local(window: 2), seed: 72);
        var model = new LlamaModel(weights);
        var c = weights.Config;
        var rng = new Rng(73);
        int memory = 3;
        var k = Enumerable.Range(0, c.Layers).Select(_ => Enumerable.Range(0, memory).Select(_ => rng.Normal(c.KvDim, 1f).Select(v => (double)v).ToArray()).ToArray()).ToArray();
        var v = Enumerable.Range(0, c.Layers).Select(_ => Enumerable.Range(0, memory).Select(_ => rng.Normal(c.KvDim, 1f).Select(x => (double)x).ToArray()).ToArray()).ToArray();
        var expected = LlamaReference.Logits(weights, Ids, k, v);

        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        Tensor Rows(double[][] rows) => model.Accelerator.FromArray(rows.SelectMany(r => r.Select(x => (float)x)).ToArray(), [memory, c.KvHeads, c.HeadDim]);
        var positions = Enumerable.Range(memory, Ids.Length).ToArray();
        var memoryPositions = Enumerable.Range(0, memory).ToArray();
        KvPrefix? Prefix(int layer) => new KvPrefix(tape.Rope(Var.Constant(Rows(k[layer])), memoryPositions, model.Rope), Var.Constant(Rows(v[layer])));
        var actual = model.Head.Forward(tape, model.Hidden(tape, model.Embed(tape, Ids), positions, null, Prefix)).Value.ToArray();
        Check.Close(expected.Cast<double>().ToArray(), actual, 1e-4, 1e-4, "local layer with a memory prefix");
    }

    [Fact]
    public void StreamingLlmKeepsLocalLayersLocal()
    {
        using var weights = GradCheck.RandomWeights(Local(window: 3), seed: 74);
        var model = new LlamaModel(weights);
        int vocab = model.Config.VocabSize;
        // Within its capacity StreamingLLM is the base model, local layer included.
        var logits = Logits(model, Ids);
        using (var streaming = new StreamingLlm(model, window: 12, sinks: 2))
        {
            Assert.Equal(10, streaming.ChunkLength);
            var streamed = streaming.Feed(Ids);
            for (int t = 1; t < Ids.Length; t++)
                Assert.Equal(UioSession.LogSoftmaxAt(logits.AsSpan((t - 1) * vocab, vocab), Ids[t]), streamed[t], 4);
        }
        // A streaming window shorter than the local window cannot be honoured with sinks: refused, naming the setting.
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new StreamingLlm(model, window: 2, sinks: 1));
        Assert.Contains("LocalWindow", error.Message);
    }

    [Fact]
    public void InvalidLocalSettingsAreRefused()
    {
        Assert.Contains("LocalWindow", Assert.Throws<ArgumentException>(() => (GradCheck.TinyConfig() with { LocalLayers = 1 }).Validate()).Message);
        Assert.Contains("LocalLayers", Assert.Throws<ArgumentException>(() => (GradCheck.TinyConfig() with { LocalLayers = 3, LocalWindow = 4 }).Validate()).Message);
        Assert.Contains("LocalWindow", Assert.Throws<ArgumentException>(() => (GradCheck.TinyConfig() with { LocalWindow = 4 }).Validate()).Message);
        Local().Validate();
        GradCheck.TinyConfig().Validate();
    }

    [Fact]
    public void FormatsThatCannotExpressLocalLayersRefuseToSaveThem()
    {
        using var weights = GradCheck.RandomWeights(Local(), seed: 75);
        string folder = Path.Combine(Path.GetTempPath(), "uio-local-" + Guid.NewGuid().ToString("N"));
        try
        {
            var hf = Assert.Throws<NotSupportedException>(() => HfCheckpoint.Save(weights, folder));
            Assert.Contains("LocalLayers", hf.Message);
            Assert.False(File.Exists(Path.Combine(folder, "model.safetensors")), "nothing may be written before the refusal");
            Assert.Contains("LocalLayers", Assert.Throws<NotSupportedException>(() => HfConfig.ToJson(weights.Config)).Message);
            string path = Path.Combine(folder, "model.bin");
            Assert.Contains("LocalLayers", Assert.Throws<NotSupportedException>(() => Llama2cCheckpoint.Save(weights, path)).Message);
            Assert.False(File.Exists(path));
            // Global configs still save.
            Assert.Contains("\"num_hidden_layers\"", HfConfig.ToJson(GradCheck.TinyConfig()));
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
