using UioLlm.Kernels.Quantization;
using UioLlm.Model.Formats;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Quantization;

/// <summary>
/// Every tensor of llama.cpp's own quantised files (../shared/data/models/quantized) dequantised here must equal,
/// bit for bit, ggml's dequantisation of the same tensor stored beside it as an F32 GGUF.
/// </summary>
public class GgufDequantizationTests
{
    public static TheoryData<string, string[]> Files() => new()
    {
        { "stories260K-ff192.Q8_0", ["Q8_0"] },
        { "stories260K-ff192.Q4_0", ["Q4_0", "Q8_0"] },
        { "stories260K-ff192.Q4_1", ["Q4_1", "Q8_0"] },
        { "stories260K-ff192.Q5_0", ["Q5_0", "Q8_0"] },
        { "stories260K-ff192.Q5_1", ["Q5_1", "Q8_0"] },
        { "randB.Q2_K", ["Q2_K", "Q3_K", "Q6_K"] },
        { "randB.Q3_K_M", ["Q3_K", "Q4_K", "Q5_K", "Q6_K"] },
        { "randB.Q4_K_M", ["Q4_K", "Q6_K"] },
        { "randB.Q5_K_M", ["Q5_K", "Q6_K"] },
        { "randB.Q6_K", ["Q6_K"] },
    };

    [DataTheory]
    [MemberData(nameof(Files))]
    public void Every_tensor_matches_ggml_bit_for_bit(string name, string[] types)
    {
        var quantized = GgufFile.Read(TestData.File("models", "quantized", name + ".gguf"));
        var reference = GgufFile.Read(TestData.File("models", "quantized", name + ".dequant-f32.gguf"));
        Assert.Equal(reference.Tensors.Select(t => t.Name), quantized.Tensors.Select(t => t.Name));
        var seen = new HashSet<string>();
        foreach (var info in quantized.Tensors)
        {
            var expected = reference.FindTensor(info.Name)!;
            Assert.Equal(GgufTensorType.F32, expected.Type);
            Assert.Equal(expected.Shape, info.Shape);
            FormatsTestSupport.AssertBits(reference.ReadTensor(expected), quantized.ReadTensor(info), $"{name} {info.Name} ({info.Type})");
            if (info.Type != GgufTensorType.F32) seen.Add(info.Type.ToString());
        }
        Assert.Equal(types.OrderBy(t => t), seen.OrderBy(t => t));
    }

    [Fact]
    public void Block_sizes_match_the_gguf_layouts()
    {
        foreach (var format in Enum.GetValues<QuantFormat>())
        {
            var type = Enum.Parse<GgufTensorType>(format.ToString());
            Assert.Equal(format, GgufFile.QuantFormatOf(type));
            Assert.Equal(QuantFormats.BlockBytes(format) * 4L, QuantFormats.ByteCount(format, QuantFormats.BlockElements(format) * 4L));
        }
        Assert.Throws<ArgumentException>(() => QuantFormats.ByteCount(QuantFormat.Q4_K, 255));
        Assert.Throws<ArgumentException>(() => QuantFormats.Dequantize(QuantFormat.Q8_0, new byte[33], new float[32]));
        Assert.Throws<ArgumentException>(() => QuantFormats.Dequantize(QuantFormat.Q8_0, new byte[34], new float[31]));
    }
}
