using UioLlm.Model.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Formats.FormatsTestSupport;

namespace UioLlm.Tests.Formats;

public class ModelLoaderTests
{
    [DataFact]
    public void Detects_and_loads_each_format()
    {
        using var dir = new TempDir();
        using var reference = Llama2cCheckpoint.Load(Stories260K, TestBackend.Shared);
        Assert.Equal(CheckpointFormat.Llama2c, ModelLoader.Detect(Stories260K));
        using (var w = ModelLoader.Load(Stories260K, TestBackend.Shared)) AssertBitEqual(reference, w);

        string hf = Path.Combine(dir.Path, "hf");
        HfCheckpoint.Save(reference, hf);
        Assert.Equal(CheckpointFormat.HuggingFace, ModelLoader.Detect(hf));
        using (var w = ModelLoader.Load(hf, TestBackend.Shared)) AssertBitEqual(reference, w);
        string safetensors = Path.Combine(hf, "model.safetensors");
        Assert.Equal(CheckpointFormat.HuggingFace, ModelLoader.Detect(safetensors));
        using (var w = ModelLoader.Load(safetensors, TestBackend.Shared)) AssertBitEqual(reference, w);

        string gguf = TestData.File("models", "llama-2-tiny-random", "llama-2-tiny-random.gguf");
        Assert.Equal(CheckpointFormat.Gguf, ModelLoader.Detect(gguf));
        using (var w = ModelLoader.Load(gguf, TestBackend.Shared)) Assert.Equal(32000, w.Config.VocabSize);

        // The GGUF magic is recognised without the extension.
        string renamed = dir.File("model.bin");
        File.Copy(gguf, renamed);
        Assert.Equal(CheckpointFormat.Gguf, ModelLoader.Detect(renamed));
    }

    [Fact]
    public void Missing_paths_and_empty_folders_are_reported()
    {
        using var dir = new TempDir();
        string missing = dir.File("no-model.bin");
        var e = Assert.Throws<FileNotFoundException>(() => ModelLoader.Load(missing, TestBackend.Shared));
        Assert.Contains(missing, e.Message);
        AssertFormatError(() => ModelLoader.Load(dir.Path, TestBackend.Shared), dir.Path, "not a model");

        // A short unrecognised file is treated as llama2.c and fails with its header error.
        string junk = dir.File("junk.bin");
        File.WriteAllBytes(junk, [1, 2, 3]);
        AssertFormatError(() => ModelLoader.Load(junk, TestBackend.Shared), junk, "llama2.c header");
    }
}
