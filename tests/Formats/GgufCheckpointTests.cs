using System.Buffers.Binary;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Formats.FormatsTestSupport;

namespace UioLlm.Tests.Formats;

public class GgufCheckpointTests
{
    private static string TinyModel => TestData.File("models", "llama-2-tiny-random", "llama-2-tiny-random.gguf");

    /// <summary>Every element of a GGUF F16 tensor, decoded from the raw file bytes by the test's own reference.</summary>
    private static float[] ReferenceF16(byte[] file, GgufTensorInfo info)
    {
        Assert.Equal(GgufTensorType.F16, info.Type);
        var values = new float[info.ByteLength / 2];
        for (int i = 0; i < values.Length; i++)
            values[i] = HalfReference.Decode(BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan((int)info.Offset + 2 * i)));
        return values;
    }

    /// <summary>Row h*hd + 2i + j of an interleaved matrix moved to row h*hd + j*hd/2 + i.</summary>
    private static float[] ToHalfSplit(float[] interleaved, int heads, int headDim, int columns)
    {
        var result = new float[interleaved.Length];
        for (int h = 0; h < heads; h++)
        for (int i = 0; i < headDim / 2; i++)
        for (int j = 0; j < 2; j++)
            Array.Copy(interleaved, (h * headDim + 2 * i + j) * columns, result, (h * headDim + j * headDim / 2 + i) * columns, columns);
        return result;
    }

    [DataFact]
    public void Loads_tiny_random_llama2_with_values_equal_to_the_file()
    {
        byte[] file = File.ReadAllBytes(TinyModel);
        var g = GgufFile.Read(TinyModel);
        using var w = GgufCheckpoint.Load(TinyModel, TestBackend.Shared);
        var c = w.Config;
        Assert.Equal((8, 32, 1, 2, 2, 32000, 4096), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.Equal((1e-5f, 10000f, 1, 2, false), (c.NormEps, c.RopeTheta, c.BosId, c.EosId, c.TiedEmbeddings));

        float[] Ref(string name) => ReferenceF16(file, g.FindTensor(name)!);
        AssertBits(Ref("token_embd.weight"), w.TokenEmbedding.ToArray(), "embedding");
        AssertBits(Ref("output.weight"), w.Output.ToArray(), "output");
        var layer = w.Layers[0];
        AssertBits(Ref("blk.0.attn_v.weight"), layer.Wv.ToArray(), "wv");
        AssertBits(Ref("blk.0.attn_output.weight"), layer.Wo.ToArray(), "wo");
        AssertBits(Ref("blk.0.ffn_gate.weight"), layer.W1.ToArray(), "w1");
        AssertBits(Ref("blk.0.ffn_down.weight"), layer.W2.ToArray(), "w2");
        AssertBits(Ref("blk.0.ffn_up.weight"), layer.W3.ToArray(), "w3");
        Assert.Equal([32, 8], layer.W1.Shape.ToArray());
        Assert.Equal([8, 32], layer.W2.Shape.ToArray());

        // Q/K: head_dim 4, so file rows (0,1,2,3) of each head become (0,2,1,3).
        var q = Ref("blk.0.attn_q.weight");
        AssertBits(ToHalfSplit(q, 2, 4, 8), layer.Wq.ToArray(), "wq");
        AssertBits(ToHalfSplit(Ref("blk.0.attn_k.weight"), 2, 4, 8), layer.Wk.ToArray(), "wk");
        Assert.Equal(q[1 * 8 + 3], layer.Wq.ToArray()[2 * 8 + 3]);
        Assert.NotEqual(q[1 * 8 + 3], layer.Wq.ToArray()[1 * 8 + 3]);

        var norm = g.FindTensor("blk.0.attn_norm.weight")!;
        for (int i = 0; i < 8; i++)
            Assert.Equal(BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan((int)norm.Offset + 4 * i)), layer.AttentionNorm.ToArray()[i]);
    }

    [Fact]
    public void Synthetic_F32_model_with_grouped_query_attention_and_tied_head()
    {
        using var dir = new TempDir();
        var model = new SyntheticLlamaGguf { IncludeOutput = false };
        string path = model.Write(dir, "gqa.gguf");
        using var w = GgufCheckpoint.Load(path, TestBackend.Shared);
        Assert.True(w.Config.TiedEmbeddings);
        Assert.Same(w.TokenEmbedding, w.Output);
        Assert.Equal((2, 1, 500000f, 7, 9), (w.Config.Heads, w.Config.KvHeads, w.Config.RopeTheta, w.Config.BosId, w.Config.EosId));
        AssertBits(model.Data["token_embd.weight"], w.TokenEmbedding.ToArray(), "embedding");
        AssertBits(ToHalfSplit(model.Data["blk.0.attn_q.weight"], 2, 4, 8), w.Layers[0].Wq.ToArray(), "wq");
        AssertBits(ToHalfSplit(model.Data["blk.0.attn_k.weight"], 1, 4, 8), w.Layers[0].Wk.ToArray(), "wk");
        AssertBits(model.Data["output_norm.weight"], w.FinalNorm.ToArray(), "final norm");
    }

    [Fact]
    public void Missing_tensor_wrong_shape_and_missing_key_are_named()
    {
        using var dir = new TempDir();
        string missing = new SyntheticLlamaGguf { Omit = "blk.0.ffn_up.weight" }.Write(dir, "missing.gguf");
        AssertFormatError(() => GgufCheckpoint.Load(missing, TestBackend.Shared), missing, "'blk.0.ffn_up.weight' is missing");

        string shape = new SyntheticLlamaGguf { Reshape = ("blk.0.attn_k.weight", [8, 8]) }.Write(dir, "shape.gguf");
        AssertFormatError(() => GgufCheckpoint.Load(shape, TestBackend.Shared), shape, "'blk.0.attn_k.weight' has shape [8, 8], expected [8, 4]");

        string key = new SyntheticLlamaGguf { SkipKey = "llama.block_count" }.Write(dir, "key.gguf");
        AssertFormatError(() => GgufCheckpoint.Load(key, TestBackend.Shared), key, "'llama.block_count' is missing");

        string arch = new SyntheticLlamaGguf { Architecture = "falcon" }.Write(dir, "arch.gguf");
        AssertFormatError(() => GgufCheckpoint.Load(arch, TestBackend.Shared), arch, "'falcon'", "only 'llama'");
    }

    [DataFact]
    public void Vocabulary_only_and_non_llama_files_are_rejected()
    {
        string spm = TestData.File("tokenizers", "llama2", "ggml-vocab-llama-spm.gguf");
        AssertFormatError(() => GgufCheckpoint.Load(spm, TestBackend.Shared), spm, "'token_embd.weight' is missing");
        string gpt2 = TestData.File("tokenizers", "gpt2", "ggml-vocab-gpt-2.gguf");
        AssertFormatError(() => GgufCheckpoint.Load(gpt2, TestBackend.Shared), gpt2, "'gpt2'");
    }
}

/// <summary>
/// A tiny llama GGUF with F32 tensors (dim 8, 2 heads, 1 kv head, ffn 12, vocab 5, 1 layer) and seeded values;
/// properties corrupt it in one chosen way.
/// </summary>
public sealed class SyntheticLlamaGguf
{
    public bool IncludeOutput { get; init; } = true;
    public string? Omit { get; init; }
    public string? SkipKey { get; init; }
    public (string Name, ulong[] Dims)? Reshape { get; init; }
    public string Architecture { get; init; } = "llama";

    /// <summary>The values written for each tensor, in file (ggml) order.</summary>
    public Dictionary<string, float[]> Data { get; } = new();

    public string Write(TempDir dir, string name)
    {
        var tensors = new List<(string Name, ulong[] Dims)>
        {
            ("token_embd.weight", [8, 5]),
            ("blk.0.attn_norm.weight", [8]),
            ("blk.0.attn_q.weight", [8, 8]),
            ("blk.0.attn_k.weight", [8, 4]),
            ("blk.0.attn_v.weight", [8, 4]),
            ("blk.0.attn_output.weight", [8, 8]),
            ("blk.0.ffn_norm.weight", [8]),
            ("blk.0.ffn_gate.weight", [8, 12]),
            ("blk.0.ffn_down.weight", [12, 8]),
            ("blk.0.ffn_up.weight", [8, 12]),
            ("output_norm.weight", [8]),
        };
        if (IncludeOutput) tensors.Add(("output.weight", [8, 5]));
        tensors.RemoveAll(t => t.Name == Omit);
        if (Reshape is { } r) tensors = tensors.Select(t => t.Name == r.Name ? (t.Name, r.Dims) : t).ToList();

        var kvs = new List<(string Key, Action<GgufBuilder, string> Write)>
        {
            ("general.architecture", (b, k) => b.KvString(k, Architecture)),
            ("llama.embedding_length", (b, k) => b.KvU32(k, 8)),
            ("llama.feed_forward_length", (b, k) => b.KvU32(k, 12)),
            ("llama.block_count", (b, k) => b.KvU32(k, 1)),
            ("llama.attention.head_count", (b, k) => b.KvU32(k, 2)),
            ("llama.attention.head_count_kv", (b, k) => b.KvU32(k, 1)),
            ("llama.context_length", (b, k) => b.KvU32(k, 64)),
            ("llama.attention.layer_norm_rms_epsilon", (b, k) => b.KvF32(k, 1e-6f)),
            ("llama.rope.freq_base", (b, k) => b.KvF32(k, 500000f)),
            ("tokenizer.ggml.bos_token_id", (b, k) => b.KvU32(k, 7)),
            ("tokenizer.ggml.eos_token_id", (b, k) => b.KvU32(k, 9)),
        };
        var kept = kvs.Where(kv => kv.Key != SkipKey).ToList();

        var builder = new GgufBuilder().Header(3, (ulong)tensors.Count, (ulong)kept.Count);
        foreach (var (key, write) in kept) write(builder, key);
        ulong offset = 0;
        var rng = new Rng(11);
        foreach (var (tensorName, dims) in tensors)
        {
            builder.Tensor(tensorName, dims, 0, offset);
            int n = (int)dims.Aggregate(1UL, (a, b) => a * b);
            Data[tensorName] = rng.Normal(n);
            offset += (ulong)((n * 4 + 31) / 32 * 32);
        }
        foreach (var (tensorName, _) in tensors)
        {
            builder.Pad(32);
            foreach (var v in Data[tensorName]) builder.F32(v);
        }
        return builder.WriteTo(dir, name);
    }
}
