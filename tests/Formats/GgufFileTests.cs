using System.Buffers.Binary;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Formats.FormatsTestSupport;

namespace UioLlm.Tests.Formats;

public class GgufFileTests
{
    private static string SpmVocab => TestData.File("tokenizers", "llama2", "ggml-vocab-llama-spm.gguf");
    private static string Gpt2Vocab => TestData.File("tokenizers", "gpt2", "ggml-vocab-gpt-2.gguf");
    private static string TinyModel => TestData.File("models", "llama-2-tiny-random", "llama-2-tiny-random.gguf");

    [DataFact]
    public void Reads_llama_spm_vocabulary_metadata()
    {
        var g = GgufFile.Read(SpmVocab);
        Assert.Equal(3u, g.Version);
        Assert.Equal(32, g.Alignment);
        Assert.Empty(g.Tensors);
        Assert.Equal(22, g.Metadata.Count);
        Assert.Equal("llama", g.GetString("tokenizer.ggml.model"));
        var tokens = g.GetStrings("tokenizer.ggml.tokens");
        Assert.Equal(32000, tokens.Length);
        Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], tokens[..4]);
        Assert.Equal("给", tokens[^1]);
        var scores = g.GetFloats("tokenizer.ggml.scores");
        Assert.Equal(32000, scores.Length);
        Assert.Equal(-31740f, scores[^1]);
        Assert.Equal([2, 3, 3, 6, 6], g.GetInts("tokenizer.ggml.token_type")[..5]);
        Assert.Equal(1, g.GetInt("tokenizer.ggml.bos_token_id"));
        Assert.Equal(32000u, g.Get<uint>("llama.vocab_size"));
        Assert.True(g.Get<bool>("tokenizer.ggml.add_bos_token"));
        Assert.False(g.Get<bool>("tokenizer.ggml.add_eos_token"));
        Assert.Equal(1e-5f, g.GetFloat("llama.attention.layer_norm_rms_epsilon"), 1e-10f);
        Assert.IsType<uint>(g.Metadata["llama.block_count"]);
        Assert.IsType<string[]>(g.Metadata["tokenizer.ggml.tokens"]);
    }

    [DataFact]
    public void Metadata_accessors_report_missing_and_mistyped_keys()
    {
        var g = GgufFile.Read(SpmVocab);
        AssertFormatError(() => g.GetString("no.such.key"), SpmVocab, "'no.such.key'", "missing");
        AssertFormatError(() => g.Get<int>("llama.vocab_size"), SpmVocab, "'llama.vocab_size'", "UInt32", "expected Int32");
        AssertFormatError(() => g.GetInt("tokenizer.ggml.model"), "'tokenizer.ggml.model'", "\"llama\"");
        AssertFormatError(() => g.GetInts("tokenizer.ggml.scores"), "'tokenizer.ggml.scores'", "Single array of 32000");
        Assert.False(g.TryGet<string>("no.such.key", out _));
        Assert.True(g.TryGet<string>("general.name", out var name));
        Assert.Equal("llama-spm", name);
        AssertFormatError(() => g.TryGet<float>("general.name", out _), "'general.name'");
        Assert.Null(g.FindTensor("token_embd.weight"));
    }

    [DataFact]
    public void Reads_gpt2_vocabulary_with_merges()
    {
        var g = GgufFile.Read(Gpt2Vocab);
        Assert.Equal("gpt2", g.GetString("tokenizer.ggml.model"));
        var tokens = g.GetStrings("tokenizer.ggml.tokens");
        Assert.Equal(50257, tokens.Length);
        Assert.Equal("<|endoftext|>", tokens[^1]);
        var merges = g.GetStrings("tokenizer.ggml.merges");
        Assert.Equal(50000, merges.Length);
        Assert.Equal("Ġ t", merges[0]);
        Assert.Equal("Ġg azed", merges[^1]);
        Assert.Equal(50256, g.GetInt("tokenizer.ggml.eos_token_id"));
    }

    [DataFact]
    public void Reads_tensor_descriptors_and_data_of_tiny_model()
    {
        string path = TinyModel;
        var g = GgufFile.Read(path);
        Assert.Equal(12, g.Tensors.Count);
        Assert.Equal(724416, g.DataOffset); // header ends at 724398, padded to 32
        var emb = g.FindTensor("token_embd.weight")!;
        Assert.Equal([8L, 32000L], emb.Shape);
        Assert.Equal(GgufTensorType.F16, emb.Type);
        Assert.Equal((724416L, 512000L), (emb.Offset, emb.ByteLength));
        var output = g.FindTensor("output.weight")!;
        Assert.Equal(new FileInfo(path).Length, output.Offset + output.ByteLength);

        byte[] file = File.ReadAllBytes(path);
        var norm = g.FindTensor("blk.0.attn_norm.weight")!;
        Assert.Equal(GgufTensorType.F32, norm.Type);
        var normValues = g.ReadTensor(norm);
        for (int i = 0; i < 8; i++)
            Assert.Equal(BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan((int)norm.Offset + 4 * i)), normValues[i]);

        var embValues = g.ReadTensor(emb);
        Assert.Equal(256000, embValues.Length);
        foreach (int i in new[] { 0, 1, 7, 8, 12345, 255999 })
            Assert.Equal(HalfReference.Decode(BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan((int)emb.Offset + 2 * i))), embValues[i]);
    }

    [Fact]
    public void Synthetic_file_with_all_value_kinds_and_BF16_F16_tensors()
    {
        using var dir = new TempDir();
        var b = new GgufBuilder().Header(2, 2, 6)
            .KvString("general.architecture", "test")
            .KvU32("general.alignment", 64)
            .Str("u8").U32(0).Byte(200)
            .Str("i64").U32(11).U64(unchecked((ulong)-5L))
            .Str("nested").U32(9).U32(9).U64(2).U32(5).U64(1).U32(7).U32(8).U64(1).Str("x")
            .Str("i16s").U32(9).U32(3).U64(2).U16(unchecked((ushort)-3)).U16(7)
            .Tensor("a", [2], 30, 0)
            .Tensor("b", [3], 1, 64)
            .Pad(64)
            .U16(0x3F80).U16(0xC040)                  // a: bf16 1.0, -3.0 at data offset 0
            .Pad(64)
            .U16(0x3800).U16(0xC000).U16(0x7BFF);     // b: f16 0.5, -2, 65504 at data offset 64
        string path = b.WriteTo(dir, "synthetic.gguf");

        var g = GgufFile.Read(path);
        Assert.Equal(2u, g.Version);
        Assert.Equal(64, g.Alignment);
        Assert.Equal(0, g.DataOffset % 64);
        Assert.Equal((byte)200, g.Get<byte>("u8"));
        Assert.Equal(200, g.GetInt("u8"));
        Assert.Equal(-5L, g.Get<long>("i64"));
        Assert.Equal(-5, g.GetInt("i64"));
        var nested = g.Get<object[]>("nested");
        Assert.Equal([7], (int[])nested[0]);
        Assert.Equal(["x"], (string[])nested[1]);
        Assert.Equal([-3, 7], g.GetInts("i16s"));
        Assert.Equal([1f, -3f], g.ReadTensor(g.FindTensor("a")!));
        Assert.Equal([0.5f, -2f, 65504f], g.ReadTensor(g.FindTensor("b")!));
    }

    [Fact]
    public void Unsupported_tensor_type_is_named()
    {
        using var dir = new TempDir();
        var b = new GgufBuilder().Header(3, 1, 0).Tensor("blk.0.attn_q.weight", [32, 2], 20, 0).Pad(32);
        var bytes = b.ToArray().Concat(new byte[36]).ToArray();
        string path = dir.File("iq4nl.gguf");
        File.WriteAllBytes(path, bytes);
        var g = GgufFile.Read(path);
        var t = g.FindTensor("blk.0.attn_q.weight")!;
        Assert.Equal((GgufTensorType.IQ4_NL, 36L), (t.Type, t.ByteLength));
        AssertFormatError(() => g.ReadTensor(t), path, "'blk.0.attn_q.weight'", "IQ4_NL is not supported");
    }

    public static TheoryData<string, byte[], string> CorruptHeaders()
    {
        var d = new TheoryData<string, byte[], string>
        {
            { "magic", new GgufBuilder().Header(3, 0, 0, magic: 0x12345678).ToArray(), "not a GGUF file" },
            { "v1", new GgufBuilder().Header(1, 0, 0).ToArray(), "version 1" },
            { "v4", new GgufBuilder().Header(4, 0, 0).ToArray(), "version 4 is not supported" },
            { "bigendian", new GgufBuilder().Header(0x03000000, 0, 0).ToArray(), "big-endian" },
            { "short", new byte[] { 0x47, 0x47 }, "GGUF magic needs 4 bytes" },
            { "kvcount", new GgufBuilder().Header(3, 0, 1UL << 60).ToArray(), "metadata count" },
            { "tensorcount", new GgufBuilder().Header(3, ulong.MaxValue, 0).ToArray(), "tensor count" },
            { "stringlen", new GgufBuilder().Header(3, 0, 1).U64(1UL << 40).Str("x").ToArray(), "metadata key 0 needs 1099511627776 bytes" },
            { "arraycount", new GgufBuilder().Header(3, 0, 1).Str("tokens").U32(9).U32(8).U64(1UL << 40).U64(0).ToArray(), "'tokens' array claims 1099511627776 elements" },
            { "valuetype", new GgufBuilder().Header(3, 0, 1).Str("k").U32(77).U32(0).ToArray(), "unknown value type 77" },
            { "bool", new GgufBuilder().Header(3, 0, 1).Str("flag").U32(7).Byte(5).ToArray(), "'flag' is a bool stored as 5" },
            { "dupkey", new GgufBuilder().Header(3, 0, 2).KvU32("a", 1).KvU32("a", 2).ToArray(), "'a' appears twice" },
            { "alignment", new GgufBuilder().Header(3, 0, 1).KvU32("general.alignment", 24).ToArray(), "general.alignment" },
            { "dims", new GgufBuilder().Header(3, 1, 0).Tensor("t", [1, 1, 1, 1, 1], 0, 0).Pad(32).U32(0).ToArray(), "'t' has 5 dimensions" },
            { "ggmltype", new GgufBuilder().Header(3, 1, 0).Tensor("t", [1], 99, 0).Pad(32).U32(0).ToArray(), "'t' has unknown ggml type 99" },
            { "block", new GgufBuilder().Header(3, 1, 0).Tensor("t", [31], 8, 0).Pad(32).U32(0).ToArray(), "multiple of the block size 32" },
            { "offset", new GgufBuilder().Header(3, 1, 0).Tensor("t", [4], 0, 32).Pad(32).F32(1).ToArray(), "'t' (F32 [4], 16 bytes at data offset 32" },
            { "misaligned", new GgufBuilder().Header(3, 1, 0).Tensor("t", [1], 0, 4).Pad(32).U64(0).ToArray(), "not a multiple of the alignment" },
            { "hugeshape", new GgufBuilder().Header(3, 1, 0).Tensor("t", [1UL << 40, 1UL << 40], 0, 0).Pad(32).ToArray(), "larger than any file" },
            { "duptensor", new GgufBuilder().Header(3, 2, 0).Tensor("t", [1], 0, 0).Tensor("t", [1], 0, 32).Pad(32).ToArray(), "'t' appears twice" },
            { "overlap", new GgufBuilder().Header(3, 2, 0).Tensor("t", [16], 0, 0).Tensor("u", [1], 0, 32).Pad(32).U64(0).U64(0).U64(0).U64(0).U64(0).U64(0).U64(0).U64(0).ToArray(), "overlaps" },
        };
        return d;
    }

    [Theory]
    [MemberData(nameof(CorruptHeaders))]
    public void Corrupted_headers_fail_with_a_named_error(string name, byte[] bytes, string fragment)
    {
        using var dir = new TempDir();
        string path = dir.File(name + ".gguf");
        File.WriteAllBytes(path, bytes);
        AssertFormatError(() => GgufFile.Read(path), path, fragment);
    }

    [DataFact]
    public void Truncated_vocabulary_fails_at_the_cut()
    {
        using var dir = new TempDir();
        byte[] bytes = File.ReadAllBytes(SpmVocab);
        foreach (int keep in new[] { 20, 300, bytes.Length / 2, bytes.Length - 1 })
        {
            string path = dir.File($"cut{keep}.gguf");
            File.WriteAllBytes(path, bytes.AsSpan(0, keep).ToArray());
            AssertFormatError(() => GgufFile.Read(path), path, "remain");
        }
    }

    [DataFact]
    public void Truncated_model_data_is_detected_from_the_header()
    {
        using var dir = new TempDir();
        byte[] bytes = File.ReadAllBytes(TinyModel);
        string path = dir.File("cut.gguf");
        File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length - 1).ToArray());
        AssertFormatError(() => GgufFile.Read(path), path, "'output.weight'", "past the end of the file (1750559 bytes)");
    }
}

/// <summary>IEEE half-precision decoding written out bit by bit (independent of System.Half).</summary>
public static class HalfReference
{
    public static float Decode(ushort h)
    {
        int sign = (h >> 15) & 1, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
        double magnitude = exponent switch
        {
            0 => mantissa * Math.Pow(2, -24),                            // subnormal
            31 => mantissa == 0 ? double.PositiveInfinity : double.NaN,
            _ => (1 + mantissa / 1024.0) * Math.Pow(2, exponent - 15),
        };
        return (float)(sign == 1 ? -magnitude : magnitude);
    }
}
