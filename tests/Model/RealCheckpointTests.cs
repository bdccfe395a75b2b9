using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

/// <summary>Real checkpoints through every loader, run end to end.</summary>
public sealed class RealCheckpointTests
{
    [DataTheory]
    [InlineData(SafetensorsDType.F32, 0L)]
    [InlineData(SafetensorsDType.F32, 300_000L)]
    public void Stories260KSavedAsHuggingFaceReloadsAndGeneratesIdentically(SafetensorsDType dtype, long shardBytes)
    {
        using var original = GoldenGenerationTests.LoadStories260K();
        using var dir = new TempDir();
        HfCheckpoint.Save(original, dir.Path, dtype, shardBytes);
        Assert.True(File.Exists(dir.File("config.json")));
        Assert.Equal(shardBytes > 0, File.Exists(dir.File("model.safetensors.index.json")));

        using var reloaded = ModelLoader.Load(dir.Path, TestBackend.Shared);
        Assert.Equal(original.Config, reloaded.Config);
        Assert.Equal(GoldenGenerationTests.ExpectedIds(), GoldenGenerationTests.GreedyFromBos(new LlamaModel(reloaded)));
    }

    [DataFact]
    public void Stories260KSavedAsLlama2cAndHalfPrecisionStillRuns()
    {
        using var original = GoldenGenerationTests.LoadStories260K();
        using var dir = new TempDir();
        Llama2cCheckpoint.Save(original, dir.File("copy.bin"));
        using (var copy = ModelLoader.Load(dir.File("copy.bin"), TestBackend.Shared))
            Assert.Equal(GoldenGenerationTests.ExpectedIds(), GoldenGenerationTests.GreedyFromBos(new LlamaModel(copy)));

        // BF16 rounds every weight: the model still runs and stays close to the original logits.
        HfCheckpoint.Save(original, dir.Path, SafetensorsDType.BF16);
        using var half = HfCheckpoint.Load(dir.Path, TestBackend.Shared);
        int[] ids = GoldenGenerationTests.ExpectedIds()[..32];
        float[] Logits(LlamaWeights w)
        {
            using var tape = new Tape(w.Accelerator);
            using var _ = tape.NoGrad();
            return new LlamaModel(w).Forward(tape, ids).Value.ToArray();
        }
        var exact = Logits(original);
        var rounded = Logits(half);
        double err = 0, norm = 0;
        for (int i = 0; i < exact.Length; i++) { err += Math.Pow(exact[i] - rounded[i], 2); norm += Math.Pow(exact[i], 2); }
        Assert.InRange(Math.Sqrt(err / norm), 1e-5, 0.05);
    }

    [DataFact]
    public void LlamaTinyRandomGgufLoadsRunsAndMatchesTheReferenceForward()
    {
        string path = TestData.File("models", "llama-2-tiny-random", "llama-2-tiny-random.gguf");
        using var weights = ModelLoader.Load(path, TestBackend.Shared);
        var c = weights.Config;
        Assert.Equal((8, 1, 2, 32, 32000), (c.Dim, c.Layers, c.Heads, c.HiddenDim, c.VocabSize));

        var tokenizer = Tokenizer.Load(path);
        Assert.Equal(32000, tokenizer.VocabSize);
        int[] prompt = tokenizer.Encode("Once upon a time", addBos: true);
        Assert.Equal(c.BosId, prompt[0]);

        var model = new LlamaModel(weights);
        using (var tape = new Tape(weights.Accelerator))
        using (tape.NoGrad())
        {
            var logits = model.Forward(tape, prompt).Value.ToArray();
            Assert.All(logits, v => Assert.True(float.IsFinite(v)));
            Check.Close(LlamaReference.Logits(weights, prompt).Cast<double>().ToArray(), logits, 1e-4, 1e-3, "tiny GGUF logits");
        }
        var result = new Generator(model).Generate(prompt, new GenerationOptions { MaxNewTokens = 12, Temperature = 0.8f, TopP = 0.9f, Seed = 3 });
        Assert.InRange(result.Tokens.Length, 1, 12);
        Assert.All(result.Tokens, id => Assert.InRange(id, 0, c.VocabSize - 1));
        Assert.NotNull(tokenizer.Decode(result.Tokens));
    }
}
