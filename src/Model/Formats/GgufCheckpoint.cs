using UioLlm.Kernels;
using UioLlm.Kernels.Quantization;

namespace UioLlm.Model.Formats;

/// <summary>
/// Loads a llama-architecture GGUF model (llama.cpp's format) into <see cref="LlamaWeights"/>. Tensors may be
/// F32, F16, BF16 or block-quantised (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, dequantised exactly as ggml does).
/// llama.cpp stores Q/K rows in interleaved RoPE order; they are permuted to Hugging Face order.
/// </summary>
public static class GgufCheckpoint
{
    /// <summary>Reads the model at <paramref name="path"/> onto <paramref name="accelerator"/>.</summary>
    /// <param name="keepQuantized">
    /// Also keep every Q8_0, Q4_0, Q4_K and Q6_K projection matrix in its quantised form
    /// (<see cref="LlamaWeights.Quantized"/>), which tape-free decoding on the CPU then multiplies by.
    /// </param>
    /// <exception cref="ModelFormatException">Not a llama GGUF, a key or tensor is missing, or a shape or type does not fit.</exception>
    public static LlamaWeights Load(string path, Accelerator accelerator, bool keepQuantized = false)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        var file = GgufFile.Read(path);
        var config = ReadConfig(file);
        var weights = HfCheckpoint.Allocate(accelerator, config, file.Path);
        try
        {
            foreach (var (ggufName, tensor, ropeHeads) in Mapping(weights))
            {
                LoadTensor(file, ggufName, tensor, ropeHeads, config.HeadDim);
                if (keepQuantized && (ggufName != "token_embd.weight" || config.TiedEmbeddings))
                    KeepQuantized(file, ggufName, tensor, ropeHeads, config.HeadDim, weights);
            }
            weights.RequireFinite(file.Path);
            return weights;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>The model shape from llama.* metadata; the vocabulary size from token_embd.weight.</summary>
    public static LlamaConfig ReadConfig(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        string arch = file.GetString("general.architecture");
        if (arch != "llama")
            throw new ModelFormatException(file.Path, $"general.architecture is '{arch}', but only 'llama' models can be loaded");

        var embedding = file.FindTensor("token_embd.weight")
            ?? throw new ModelFormatException(file.Path, "tensor 'token_embd.weight' is missing (is this a vocabulary-only file?)");
        if (embedding.Shape.Length != 2 || embedding.Shape[1] > int.MaxValue)
            throw new ModelFormatException(file.Path, $"tensor 'token_embd.weight' has shape {embedding.ShapeString}, expected [embedding_length, vocab_size]");

        int heads = file.GetInt("llama.attention.head_count");
        var config = new LlamaConfig
        {
            Dim = file.GetInt("llama.embedding_length"),
            HiddenDim = file.GetInt("llama.feed_forward_length"),
            Layers = file.GetInt("llama.block_count"),
            Heads = heads,
            KvHeads = file.Metadata.ContainsKey("llama.attention.head_count_kv") ? file.GetInt("llama.attention.head_count_kv") : heads,
            VocabSize = (int)embedding.Shape[1],
            MaxSeqLen = file.GetInt("llama.context_length"),
            NormEps = file.GetFloat("llama.attention.layer_norm_rms_epsilon"),
            RopeTheta = file.Metadata.ContainsKey("llama.rope.freq_base") ? file.GetFloat("llama.rope.freq_base") : 10000f,
            RopeScaling = ReadRopeScaling(file),
            TiedEmbeddings = file.FindTensor("output.weight") is null,
            BosId = file.Metadata.ContainsKey("tokenizer.ggml.bos_token_id") ? file.GetInt("tokenizer.ggml.bos_token_id") : 1,
            EosId = file.Metadata.ContainsKey("tokenizer.ggml.eos_token_id") ? file.GetInt("tokenizer.ggml.eos_token_id") : 2,
        };
        try
        {
            config.Validate(file.Path);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(file.Path, $"llama metadata does not describe a valid model: {e.Message}", e);
        }
        // Tensors this loader would otherwise skip silently, computing another function than the file's.
        foreach (var t in file.Tensors)
        {
            if (t.Name == "rope_freqs.weight")
                throw new ModelFormatException(file.Path, "tensor 'rope_freqs.weight' (per-frequency RoPE factors, Llama 3.1-style scaling) is not supported in GGUF files; load the Hugging Face folder, whose rope_scaling llama3 is supported");
            if (t.Name.EndsWith(".bias", StringComparison.Ordinal))
                throw new ModelFormatException(file.Path, $"tensor '{t.Name}': biases are not supported in llama GGUF files");
        }
        if (file.Metadata.ContainsKey("llama.rope.dimension_count") && file.GetInt("llama.rope.dimension_count") != config.HeadDim)
            throw new ModelFormatException(file.Path, $"llama.rope.dimension_count is {file.GetInt("llama.rope.dimension_count")}, but only full-head RoPE (head_dim {config.HeadDim}) is supported");
        return config;
    }

    /// <summary>llama.rope.scaling.{type, factor, original_context_length}; null when absent or "none".</summary>
    private static RopeScaling? ReadRopeScaling(GgufFile file)
    {
        if (!file.TryGet<string>("llama.rope.scaling.type", out var type) || type == "none") return null;
        var kind = type switch
        {
            "linear" => RopeScalingKind.Linear,
            "yarn" => RopeScalingKind.Yarn,
            _ => throw new ModelFormatException(file.Path, $"llama.rope.scaling.type '{type}' is not supported (expected none, linear or yarn)"),
        };
        float factor = file.GetFloat("llama.rope.scaling.factor");
        int original = file.Metadata.ContainsKey("llama.rope.scaling.original_context_length")
            ? file.GetInt("llama.rope.scaling.original_context_length")
            : file.GetInt("llama.context_length");
        return new RopeScaling(kind, factor, original);
    }

    /// <summary>Each GGUF tensor name with its target and, for Q/K, the number of heads to un-permute.</summary>
    private static IEnumerable<(string GgufName, Tensor Target, int RopeHeads)> Mapping(LlamaWeights w)
    {
        yield return ("token_embd.weight", w.TokenEmbedding, 0);
        for (int l = 0; l < w.Layers.Count; l++)
        {
            var layer = w.Layers[l];
            string p = $"blk.{l}.";
            yield return (p + "attn_norm.weight", layer.AttentionNorm, 0);
            yield return (p + "attn_q.weight", layer.Wq, w.Config.Heads);
            yield return (p + "attn_k.weight", layer.Wk, w.Config.KvHeads);
            yield return (p + "attn_v.weight", layer.Wv, 0);
            yield return (p + "attn_output.weight", layer.Wo, 0);
            yield return (p + "ffn_norm.weight", layer.FfnNorm, 0);
            yield return (p + "ffn_gate.weight", layer.W1, 0);
            yield return (p + "ffn_down.weight", layer.W2, 0);
            yield return (p + "ffn_up.weight", layer.W3, 0);
        }
        yield return ("output_norm.weight", w.FinalNorm, 0);
        if (!w.Config.TiedEmbeddings) yield return ("output.weight", w.Output, 0);
    }

    /// <summary>Keeps the file's blocks of a Q8_0 / Q4_0 / Q4_K / Q6_K matrix (rows moved like the float copy's for Q/K).</summary>
    private static void KeepQuantized(GgufFile file, string name, Tensor target, int ropeHeads, int headDim, LlamaWeights weights)
    {
        var info = file.FindTensor(name)!;
        if (target.Rank != 2 || GgufFile.QuantFormatOf(info.Type) is not { } format || !QuantizedMatrix.HasKernel(format)) return;
        var bytes = file.ReadRawTensor(info);
        if (ropeHeads > 0)
        {
            int rowBytes = (int)QuantFormats.ByteCount(format, target.Dim(1));
            PermuteRows(bytes, ropeHeads, headDim, rowBytes);
        }
        weights.KeepQuantized(target.Name!, QuantizedMatrix.FromBlocks(format, target.Dim(0), target.Dim(1), bytes));
    }

    /// <summary>The row move of <see cref="RopePermutation.InterleavedToHalfSplit"/> on rows of raw bytes.</summary>
    private static void PermuteRows(byte[] data, int heads, int headDim, int rowBytes)
    {
        int half = headDim / 2, block = headDim * rowBytes;
        var scratch = new byte[block];
        for (int h = 0; h < heads; h++)
        {
            var head = data.AsSpan(h * block, block);
            head.CopyTo(scratch);
            for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                scratch.AsSpan((2 * i + j) * rowBytes, rowBytes).CopyTo(head.Slice((j * half + i) * rowBytes, rowBytes));
        }
    }

    /// <summary>
    /// Copies one tensor. ggml lists the fastest axis first, so our row-major [out, in] is ggml [in, out]:
    /// the bytes are already in our order and only the shape is compared reversed.
    /// </summary>
    private static void LoadTensor(GgufFile file, string name, Tensor target, int ropeHeads, int headDim)
    {
        var info = file.FindTensor(name) ?? throw new ModelFormatException(file.Path, $"tensor '{name}' is missing");
        long[] expected = target.Shape.ToArray().Reverse().Select(d => (long)d).ToArray();
        if (!info.Shape.SequenceEqual(expected))
            throw new ModelFormatException(file.Path, $"tensor '{name}' has shape {info.ShapeString}, expected [{string.Join(", ", expected)}] for the configured model");
        var values = file.ReadTensor(info);
        if (ropeHeads > 0) RopePermutation.InterleavedToHalfSplit(values, ropeHeads, headDim, target.Dim(1));
        target.CopyFrom(values);
    }
}
