using UioLlm.Kernels;
using UioLlm.Kernels.Quantization;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Quantization;

/// <summary>
/// The quantised matrix-vector kernels (Q8_0, Q4_0, Q4_K) against the plain reference: dequantise every weight
/// block (bit-exact with ggml, see <see cref="GgufDequantizationTests"/>), quantise the activations to 8 bits per
/// block of 32 as ggml's quantize_row_q8_0 does, and sum the products in double.
/// </summary>
public class QuantizedMatVecTests
{
    private static string Data(string file) => TestData.File("models", "quantized", file);

    /// <summary>The activations after 8-bit block quantisation, written out plainly: d = amax / 127, q = round(x / d).</summary>
    private static double[] ReferenceActivations(float[] x)
    {
        var result = new double[x.Length];
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(x[32 * b + j]));
            float d = amax / 127;
            float id = d != 0 ? 1f / d : 0f;
            for (int j = 0; j < 32; j++) result[32 * b + j] = (double)d * MathF.Round(x[32 * b + j] * id, MidpointRounding.AwayFromZero);
        }
        return result;
    }

    /// <summary>The reference: y[t, r] = sum_c W[r, c] x'[t, c] in double over the dequantised weights and activations; also sum |w x'|.</summary>
    private static (double[] Y, double[] Magnitude) Reference(QuantizedMatrix m, float[] input, int tokens)
    {
        var x = ReferenceActivations(input);
        var w = m.Dequantize();
        var y = new double[tokens * m.Rows];
        var mag = new double[tokens * m.Rows];
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < m.Rows; r++)
            {
                double s = 0, a = 0;
                for (int c = 0; c < m.Columns; c++)
                {
                    double p = (double)w[(long)r * m.Columns + c] * x[t * m.Columns + c];
                    s += p;
                    a += Math.Abs(p);
                }
                y[t * m.Rows + r] = s;
                mag[t * m.Rows + r] = a;
            }
        return (y, mag);
    }

    private static void AssertParity(QuantizedMatrix m, int tokens, int threads, int seed, string what)
    {
        var x = new Rng(seed).Normal(tokens * m.Columns);
        var (expected, magnitude) = Reference(m, x, tokens);
        var y = new float[tokens * m.Rows];
        m.MatVec(x, y, tokens, threads);
        for (int i = 0; i < y.Length; i++)
            Assert.True(Math.Abs(y[i] - expected[i]) <= 1e-5 * magnitude[i] + 1e-6,
                $"{what} ({tokens} token(s), {threads} thread(s)): output {i} is {y[i]:G9}, reference {expected[i]:G9}");
    }

    public static TheoryData<string, string, string> RealTensors() => new()
    {
        { "stories260K-ff192.Q8_0.gguf", "blk.0.ffn_down.weight", "Q8_0" },
        { "stories260K-ff192.Q8_0.gguf", "output.weight", "Q8_0" },
        { "stories260K-ff192.Q4_0.gguf", "blk.2.ffn_gate.weight", "Q4_0" },
        { "stories260K-ff192.Q4_0.gguf", "blk.4.attn_k.weight", "Q4_0" },
        { "randB.Q4_K_M.gguf", "blk.0.ffn_up.weight", "Q4_K" },
        { "randB.Q4_K_M.gguf", "blk.0.ffn_down.weight", "Q4_K" },
        { "randB.Q4_K_M.gguf", "output.weight", "Q6_K" },
        { "randB.Q6_K.gguf", "blk.1.ffn_down.weight", "Q6_K" },
    };

    [DataTheory]
    [MemberData(nameof(RealTensors))]
    public void Kernels_match_the_reference_on_llama_cpp_blocks(string file, string tensor, string type)
    {
        var g = GgufFile.Read(Data(file));
        var info = g.FindTensor(tensor)!;
        var format = GgufFile.QuantFormatOf(info.Type)!.Value;
        Assert.Equal(type, format.ToString());
        var m = QuantizedMatrix.FromBlocks(format, (int)info.Shape[1], (int)info.Shape[0], g.ReadRawTensor(info));
        Assert.Equal(g.ReadTensor(info), m.Dequantize());
        AssertPortableParity(m, 4);
        AssertParity(m, 1, 1, 1, $"{file} {tensor}");
        AssertParity(m, 1, 2, 2, $"{file} {tensor}");
        AssertParity(m, 3, 2, 3, $"{file} {tensor}");
    }

    [Theory]
    [InlineData(QuantFormat.Q8_0)]
    [InlineData(QuantFormat.Q4_0)]
    [InlineData(QuantFormat.Q4_K)]
    public void The_portable_kernel_matches_the_reference_too(QuantFormat format)
    {
        const int rows = 5, columns = 512;
        var m = QuantizedMatrix.Quantize(format, new Rng(40).Normal(rows * columns), rows, columns);
        AssertPortableParity(m, rows);
        AssertParity(m, 2, 2, 42, $"{format} random");
    }

    /// <summary>The scalar kernel (CPUs without AVX2) on the first rows, and the activation quantiser, against the reference.</summary>
    private static unsafe void AssertPortableParity(QuantizedMatrix m, int rows)
    {
        var format = m.Format;
        int columns = m.Columns;
        rows = Math.Min(rows, m.Rows);
        var x = new Rng(41).Normal(columns);
        var (expected, magnitude) = Reference(m, x, 1);
        var q = new sbyte[columns];
        var scale = new float[columns / 32];
        var sum = new float[columns / 32];
        QuantizedMatrix.QuantizeActivations(x, q, scale, sum);
        var dequantized = ReferenceActivations(x);
        for (int b = 0; b < sum.Length; b++)
            Assert.Equal(dequantized.Skip(32 * b).Take(32).Sum(), sum[b], 1e-5 * (1 + Math.Abs(sum[b])));
        fixed (byte* blocks = m.Blocks)
        fixed (sbyte* pq = q)
        fixed (float* ps = scale)
            for (int r = 0; r < rows; r++)
            {
                float got = QuantizedMatrix.DotScalar(format, blocks + r * m.RowBytes, pq, ps, columns);
                Assert.True(Math.Abs(got - expected[r]) <= 1e-5 * magnitude[r] + 1e-6, $"{format} row {r}: {got} vs {expected[r]}");
            }
    }

    [DataTheory]
    [InlineData("stories260K-ff192.Q8_0.gguf", "blk.1.attn_q.weight")]
    [InlineData("stories260K-ff192.Q8_0.gguf", "token_embd.weight")]
    [InlineData("stories260K-ff192.Q4_0.gguf", "blk.3.ffn_up.weight")]
    [InlineData("stories260K-ff192.Q4_0.gguf", "blk.0.attn_output.weight")]
    public void Q8_0_and_Q4_0_quantisers_write_the_bytes_llama_quantize_writes(string file, string tensor)
    {
        var source = GgufFile.Read(Data("stories260K-ff192.f32.gguf"));
        var quantized = GgufFile.Read(Data(file));
        var info = quantized.FindTensor(tensor)!;
        var format = GgufFile.QuantFormatOf(info.Type)!.Value;
        var m = QuantizedMatrix.Quantize(format, source.ReadTensor(source.FindTensor(tensor)!), (int)info.Shape[1], (int)info.Shape[0]);
        Assert.Equal(quantized.ReadRawTensor(info), m.Blocks.ToArray());
    }

    [Fact]
    public void The_Q4_K_quantiser_reconstructs_within_its_precision()
    {
        var w = new Rng(50).Normal(4 * 256);
        var back = QuantizedMatrix.Quantize(QuantFormat.Q4_K, w, 4, 256).Dequantize();
        double err = 0, norm = 0;
        for (int i = 0; i < w.Length; i++)
        {
            err += (back[i] - w[i]) * (double)(back[i] - w[i]);
            norm += (double)w[i] * w[i];
        }
        Assert.InRange(Math.Sqrt(err / norm), 0, 0.12); // ggml's own Q4_K measures 0.055 on uniform weights (verify.txt)
    }

    [Fact]
    public void Bad_shapes_and_formats_are_refused()
    {
        Assert.Contains("Q5_K", Assert.Throws<ArgumentException>(() => QuantizedMatrix.FromBlocks(QuantFormat.Q5_K, 1, 256, new byte[176])).Message);
        Assert.Contains("no Q6_K quantiser", Assert.Throws<ArgumentException>(() => QuantizedMatrix.Quantize(QuantFormat.Q6_K, new float[256], 1, 256)).Message);
        Assert.Contains("needs 68 bytes", Assert.Throws<ArgumentException>(() => QuantizedMatrix.FromBlocks(QuantFormat.Q8_0, 2, 32, new byte[67])).Message);
        Assert.Contains("multiple of 256", Assert.Throws<ArgumentException>(() => QuantizedMatrix.Quantize(QuantFormat.Q4_K, new float[64], 2, 32)).Message);
        var m = QuantizedMatrix.Quantize(QuantFormat.Q8_0, new float[64], 2, 32);
        Assert.Throws<ArgumentException>(() => m.MatVec(new float[31], new float[2]));
        Assert.Throws<ArgumentException>(() => m.MatVec(new float[32], new float[3]));
    }

    [DataFact]
    public void A_kept_quantised_stories260K_decodes_like_llama_cpp()
    {
        var acc = TestBackend.Shared;
        if (acc.Kind != AcceleratorKind.Cpu) return; // the quantised kernels are CPU kernels; other backends decode in float32
        string path = Data("stories260K-ff192.Q8_0.gguf");
        using var kept = GgufCheckpoint.Load(path, acc, keepQuantized: true);
        using var plain = GgufCheckpoint.Load(path, acc);
        Assert.Equal(36, kept.Quantized.Count); // every projection and the head; the embedding stays float32
        Assert.Empty(plain.Quantized);
        var tokenizer = Tokenizer.Load(path);
        var prompt = tokenizer.Encode("Once upon a time", addBos: true);
        var options = new GenerationOptions { MaxNewTokens = 20, Temperature = 0 };
        var a = new Generator(new LlamaModel(kept)).Generate(prompt, options).Tokens;
        var b = new Generator(new LlamaModel(plain)).Generate(prompt, options).Tokens;
        Assert.Equal(b, a);
        // llama-simple (llama.cpp c392e509) on the same file: ../shared/data/models/quantized/llama-simple-A.txt.
        string text = tokenizer.Decode([.. prompt, .. a]);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily. She loved to play outsid", text.TrimStart());
    }

    [DataFact]
    public void Kept_Q4_K_weights_give_close_to_the_float32_logits()
    {
        var acc = TestBackend.Shared;
        if (acc.Kind != AcceleratorKind.Cpu) return;
        string path = Data("randB.Q4_K_M.gguf");
        using var kept = GgufCheckpoint.Load(path, acc, keepQuantized: true);
        using var plain = GgufCheckpoint.Load(path, acc);
        Assert.Contains(kept.Quantized.Values, m => m.Format == QuantFormat.Q4_K);
        Assert.Contains(kept.Quantized.Values, m => m.Format == QuantFormat.Q6_K);   // the head and two matrices
        Assert.Equal(15, kept.Quantized.Count);                                       // 2 x 7 projections + the head
        var quantizedModel = new LlamaModel(kept);
        var floatModel = new LlamaModel(plain);
        Assert.NotNull(quantizedModel.Head.Quantized);
        Assert.Null(floatModel.Head.Quantized);
        int[] ids = [1, 40, 300, 7, 99];
        using var c1 = quantizedModel.NewCache(16);
        using var c2 = floatModel.NewCache(16);
        using var b1 = quantizedModel.NewInferenceBuffers(8);
        using var b2 = floatModel.NewInferenceBuffers(8);
        quantizedModel.Infer(ids[..1], c1, b1);
        floatModel.Infer(ids[..1], c2, b2);
        foreach (int id in ids[1..])
        {
            var q = quantizedModel.Infer([id], c1, b1).ToArray();
            var f = floatModel.Infer([id], c2, b2).ToArray();
            // The kernels quantise activations to 8 bits (as llama.cpp does); on these random weights the logits
            // are sums that mostly cancel, so compare whole vectors.
            Check.RelativeNorm(Check.ToDouble(f), q, 0.05, "Q4_K decode logits");
        }
        // Weights that may change again drop their quantised copies (they would go stale).
        _ = new LlamaModel(kept, trainable: true);
        Assert.Empty(kept.Quantized);
    }
}
