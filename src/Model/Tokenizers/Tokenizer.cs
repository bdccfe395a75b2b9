namespace UioLlm.Model.Tokenizers;

/// <summary>Opens a tokenizer from a file or a model folder, detecting the format.</summary>
public static class Tokenizer
{
    /// <summary>
    /// Loads <paramref name="path"/>: a SentencePiece .model, a llama2.c tokenizer.bin, a .gguf (by
    /// tokenizer.ggml.model: "llama" or "gpt2"), a Hugging Face tokenizer.json, GPT-2's encoder.json (with
    /// vocab.bpe beside it), or a folder holding tokenizer.model, tokenizer.json, encoder.json + vocab.bpe or
    /// tokenizer.bin (tried in that order). A tokenizer.json runs as Hugging Face defines it
    /// (<see cref="HuggingFaceTokenizer"/>, or <see cref="UnigramTokenizer"/> for a Unigram model); a SentencePiece
    /// .model is BPE (ours) or Unigram (<see cref="UnigramTokenizer"/>). The names cl100k_base and o200k_base, when no
    /// such file exists, open those tiktoken encodings (<see cref="TiktokenEncoding"/>).
    /// </summary>
    public static ITokenizer Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path)) return LoadFolder(path);
        if (!File.Exists(path) && TiktokenEncoding.Names.Contains(path)) return TiktokenEncoding.Create(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file or folder not found: {path}", path);

        string name = Path.GetFileName(path).ToLowerInvariant();
        if (name == "encoder.json") return ByteLevelBpeTokenizer.FromEncoderJson(path, Sibling(path, "vocab.bpe"));
        if (name == "vocab.bpe") return ByteLevelBpeTokenizer.FromEncoderJson(Sibling(path, "encoder.json"), path);

        Span<byte> head = stackalloc byte[4];
        int n;
        using (var stream = File.OpenRead(path)) n = stream.ReadAtLeast(head, 4, throwOnEndOfStream: false);
        head = head[..n];
        if (head.SequenceEqual("GGUF"u8)) return GgufTokenizer.Load(path);
        if (name.EndsWith(".gguf", StringComparison.Ordinal))
            throw new ModelFormatException(path, $"GGUF file does not start with the magic 'GGUF' (found {Convert.ToHexString(head)})");
        if (name.EndsWith(".json", StringComparison.Ordinal) || (n > 0 && (head[0] == (byte)'{' || head[0] == 0xEF)))
            return HuggingFace.TokenizerJsonReader.Load(path);
        if (name.EndsWith(".model", StringComparison.Ordinal)) return LoadModelFile(path);
        if (name.EndsWith(".bin", StringComparison.Ordinal)) return SentencePieceTokenizer.FromLlama2cFile(path);
        // No telling name: a ModelProto starts with field 1 (pieces), wire type 2, i.e. the byte 0x0A.
        return n > 0 && head[0] == 0x0A ? LoadModelFile(path) : SentencePieceTokenizer.FromLlama2cFile(path);
    }

    /// <summary>A SentencePiece ModelProto: BPE models run on ours, Unigram models on Microsoft.ML.Tokenizers.</summary>
    private static ITokenizer LoadModelFile(string path)
    {
        byte[] data = File.ReadAllBytes(path);
        return SentencePieceModelReader.ModelType(data, path) == 1 ? UnigramTokenizer.FromModelFile(path) : SentencePieceTokenizer.FromModelFile(path);
    }

    private static ITokenizer LoadFolder(string folder)
    {
        string model = Path.Combine(folder, "tokenizer.model");
        if (File.Exists(model)) return LoadModelFile(model);
        string json = Path.Combine(folder, "tokenizer.json");
        if (File.Exists(json)) return HuggingFace.TokenizerJsonReader.Load(json);
        string encoder = Path.Combine(folder, "encoder.json"), merges = Path.Combine(folder, "vocab.bpe");
        if (File.Exists(encoder) && File.Exists(merges)) return ByteLevelBpeTokenizer.FromEncoderJson(encoder, merges);
        string bin = Path.Combine(folder, "tokenizer.bin");
        if (File.Exists(bin)) return SentencePieceTokenizer.FromLlama2cFile(bin);
        throw new ModelFormatException(folder, "no tokenizer found: expected tokenizer.model, tokenizer.json, encoder.json + vocab.bpe or tokenizer.bin in the folder");
    }

    private static string Sibling(string path, string name)
    {
        string sibling = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, name);
        if (!File.Exists(sibling)) throw new ModelFormatException(path, $"{name} is missing beside it (GPT-2 needs encoder.json and vocab.bpe)");
        return sibling;
    }
}
