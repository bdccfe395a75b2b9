using UioLlm.Kernels;

namespace UioLlm.Model.Formats;

/// <summary>The checkpoint formats <see cref="ModelLoader"/> recognises.</summary>
public enum CheckpointFormat
{
    /// <summary>A Hugging Face folder (config.json + safetensors).</summary>
    HuggingFace,
    /// <summary>A llama.cpp GGUF file.</summary>
    Gguf,
    /// <summary>A llama2.c "version 0" checkpoint.</summary>
    Llama2c,
}

/// <summary>Loads a model from any supported checkpoint, choosing the reader from the path and the file's magic.</summary>
public static class ModelLoader
{
    private static readonly byte[] GgufMagic = "GGUF"u8.ToArray();

    /// <summary>Reads the model at <paramref name="path"/> onto <paramref name="accelerator"/>.</summary>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    /// <param name="keepQuantized">For a GGUF: also keep Q8_0 / Q4_0 / Q4_K / Q6_K matrices quantised for CPU decoding (see <see cref="GgufCheckpoint.Load"/>).</param>
    /// <exception cref="ModelFormatException">The checkpoint is invalid for the detected format.</exception>
    public static LlamaWeights Load(string path, Accelerator accelerator, bool keepQuantized = false)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        return Detect(path) switch
        {
            CheckpointFormat.HuggingFace => HfCheckpoint.Load(HfFolder(path), accelerator),
            CheckpointFormat.Gguf => GgufCheckpoint.Load(path, accelerator, keepQuantized),
            _ => Llama2cCheckpoint.Load(path, accelerator),
        };
    }

    /// <summary>
    /// The format of <paramref name="path"/>: a folder with config.json, or a *.safetensors file or folder of them,
    /// is Hugging Face; *.gguf or the GGUF magic is GGUF; any other file is llama2.c.
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    /// <exception cref="ModelFormatException">A folder holds no recognisable checkpoint.</exception>
    public static CheckpointFormat Detect(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
        {
            if (File.Exists(Path.Combine(path, HfCheckpoint.ConfigFile)) || Directory.EnumerateFiles(path, "*.safetensors").Any())
                return CheckpointFormat.HuggingFace;
            throw new ModelFormatException(path, $"folder holds neither {HfCheckpoint.ConfigFile} nor *.safetensors files, so it is not a model");
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"model '{path}' does not exist", path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return CheckpointFormat.HuggingFace;
        if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) || StartsWithGgufMagic(path)) return CheckpointFormat.Gguf;
        return CheckpointFormat.Llama2c;
    }

    /// <summary>The folder of a Hugging Face checkpoint given as the folder itself or one of its safetensors files.</summary>
    private static string HfFolder(string path) =>
        Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;

    private static bool StartsWithGgufMagic(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
        Span<byte> head = stackalloc byte[4];
        return stream.Read(head) == 4 && head.SequenceEqual(GgufMagic);
    }
}
