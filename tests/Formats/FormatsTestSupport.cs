using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Formats;

/// <summary>A fresh folder under the system temp directory, deleted with everything in it on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "uiollm-formats-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}

/// <summary>Helpers shared by the checkpoint-format tests.</summary>
public static class FormatsTestSupport
{
    public static string Stories260K => TestData.File("models", "stories260K", "stories260K.bin");

    /// <summary>Small weights with seeded random values (untied head unless told otherwise).</summary>
    public static LlamaWeights RandomWeights(Accelerator accelerator, bool tied = false, int seed = 7)
    {
        var config = new LlamaConfig { Dim = 16, HiddenDim = 24, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 10, MaxSeqLen = 32, TiedEmbeddings = tied };
        var weights = LlamaWeights.Allocate(accelerator, config);
        var rng = new Rng(seed);
        foreach (var (_, t) in weights.Named()) t.CopyFrom(rng.Normal(t.Length));
        return weights;
    }

    /// <summary>Asserts that both models have the same config and bit-identical tensors.</summary>
    public static void AssertBitEqual(LlamaWeights expected, LlamaWeights actual)
    {
        Assert.Equal(expected.Config, actual.Config);
        var a = actual.Named().ToDictionary(x => x.Name, x => x.Tensor);
        foreach (var (name, t) in expected.Named())
        {
            Assert.True(a.TryGetValue(name, out var other), $"tensor {name} missing after reload");
            Assert.Equal(t.Shape.ToArray(), other!.Shape.ToArray());
            AssertBits(t.ToArray(), other.ToArray(), name);
        }
        Assert.Equal(expected.Config.TiedEmbeddings, ReferenceEquals(actual.Output, actual.TokenEmbedding));
    }

    public static void AssertBits(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]:G9}, expected {expected[i]:G9}");
    }

    /// <summary>Asserts that <paramref name="action"/> throws a ModelFormatException whose message contains every fragment.</summary>
    public static ModelFormatException AssertFormatError(Action action, params string[] fragments)
    {
        var e = Assert.Throws<ModelFormatException>(action);
        foreach (var f in fragments)
            Assert.True(e.Message.Contains(f, StringComparison.Ordinal), $"message lacks '{f}': {e.Message}");
        return e;
    }
}
