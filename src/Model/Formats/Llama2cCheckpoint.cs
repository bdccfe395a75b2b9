using System.Buffers.Binary;
using UioLlm.Kernels;

namespace UioLlm.Model.Formats;

/// <summary>
/// Karpathy's llama2.c checkpoint, "version 0": a 7-int32 header (dim, hidden_dim, n_layers, n_heads,
/// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored separately), then
/// float32 tensors in a fixed order. Q/K rows are in Meta's interleaved RoPE order and are permuted to
/// Hugging Face order on load (and back on save).
/// </summary>
public static class Llama2cCheckpoint
{
    private const int HeaderInts = 7;
    private const int HeaderBytes = HeaderInts * sizeof(int);

    /// <summary>Reads a llama2.c checkpoint onto <paramref name="accelerator"/>.</summary>
    /// <exception cref="ModelFormatException">The header is invalid or the file length does not match it.</exception>
    public static LlamaWeights Load(string path, Accelerator accelerator)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(accelerator);
        if (!File.Exists(path)) throw new FileNotFoundException($"llama2.c checkpoint '{path}' does not exist", path);

        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var config = ReadHeader(stream, path);
        CheckLength(path, config, stream.Length);

        var weights = HfCheckpoint.Allocate(accelerator, config, path);
        try
        {
            ReadTensors(stream, weights);
            weights.RequireFinite(path);
            return weights;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>The model shape a llama2.c checkpoint declares, checked against the file length, without reading weights.</summary>
    public static LlamaConfig ReadConfig(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"llama2.c checkpoint '{path}' does not exist", path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var config = ReadHeader(stream, path);
        CheckLength(path, config, stream.Length);
        return config;
    }

    /// <summary>Writes <paramref name="weights"/> in llama2.c format (atomically: a temporary file renamed over <paramref name="path"/>).</summary>
    public static void Save(LlamaWeights weights, string path)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(path);
        var c = weights.Config;
        c.RequireGlobalAttention("llama2.c checkpoint");
        if (c.AttentionBias)
            throw new NotSupportedException("llama2.c checkpoint cannot express q/k/v biases (AttentionBias); saving would drop them. Save it as a Hugging Face folder instead.");
        AtomicFile.Write(path, stream =>
        {
            Span<byte> header = stackalloc byte[HeaderBytes];
            int[] values = [c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.TiedEmbeddings ? c.VocabSize : -c.VocabSize, c.MaxSeqLen];
            for (int i = 0; i < HeaderInts; i++) BinaryPrimitives.WriteInt32LittleEndian(header.Slice(4 * i), values[i]);
            stream.Write(header);
            WriteTensors(stream, weights);
        });
    }

    private static LlamaConfig ReadHeader(Stream stream, string path)
    {
        if (stream.Length < HeaderBytes)
            throw new ModelFormatException(path, $"llama2.c header needs {HeaderBytes} bytes (7 int32), the file has {stream.Length}");
        var header = new byte[HeaderBytes];
        stream.ReadExactly(header);
        int Field(int i) => BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(4 * i));
        int dim = Field(0), hidden = Field(1), layers = Field(2), heads = Field(3), kvHeads = Field(4), vocab = Field(5), seqLen = Field(6);

        string fields = $"dim {dim}, hidden_dim {hidden}, n_layers {layers}, n_heads {heads}, n_kv_heads {kvHeads}, vocab_size {vocab}, seq_len {seqLen}";
        if (vocab == int.MinValue) throw new ModelFormatException(path, $"llama2.c header has an invalid vocab_size ({fields})");
        var config = new LlamaConfig
        {
            Dim = dim,
            HiddenDim = hidden,
            Layers = layers,
            Heads = heads,
            KvHeads = kvHeads,
            VocabSize = Math.Abs(vocab),
            MaxSeqLen = seqLen,
            NormEps = 1e-5f,
            RopeTheta = 10000f,
            TiedEmbeddings = vocab > 0,
            BosId = 1,
            EosId = 2,
        };
        try
        {
            config.Validate(path);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(path, $"llama2.c header is not a valid model ({fields}): {e.Message}", e);
        }
        return config;
    }

    /// <summary>The tensors of the file in order, with their float counts (including the skipped RoPE tables).</summary>
    /// <exception cref="OverflowException">The sizes do not fit in 64 bits.</exception>
    private static List<(string Name, long Floats)> Sections(LlamaConfig c)
    {
        checked
        {
            long d = c.Dim, kv = c.KvDim, h = c.HiddenDim, l = c.Layers, v = c.VocabSize;
            var sections = new List<(string, long)>
            {
                ("token_embedding [vocab, dim]", v * d),
                ("rms_att [L, dim]", l * d),
                ("wq [L, dim, dim]", l * d * d),
                ("wk [L, kv_dim, dim]", l * kv * d),
                ("wv [L, kv_dim, dim]", l * kv * d),
                ("wo [L, dim, dim]", l * d * d),
                ("rms_ffn [L, dim]", l * d),
                ("w1 [L, hidden, dim]", l * h * d),
                ("w2 [L, dim, hidden]", l * d * h),
                ("w3 [L, hidden, dim]", l * h * d),
                ("rms_final [dim]", d),
                ("freq_cis_real [seq_len, head_dim/2]", (long)c.MaxSeqLen * (c.HeadDim / 2)),
                ("freq_cis_imag [seq_len, head_dim/2]", (long)c.MaxSeqLen * (c.HeadDim / 2)),
            };
            if (!c.TiedEmbeddings) sections.Add(("wcls [vocab, dim]", v * d));
            return sections;
        }
    }

    /// <summary>Fails, listing every section's size, unless the file is exactly header + sections long.</summary>
    private static void CheckLength(string path, LlamaConfig config, long actual)
    {
        long expected;
        List<(string Name, long Floats)> sections;
        try
        {
            sections = Sections(config);
            expected = HeaderBytes;
            foreach (var (_, floats) in sections) expected = checked(expected + checked(floats * sizeof(float)));
        }
        catch (OverflowException e)
        {
            throw new ModelFormatException(path, $"llama2.c header describes a model too large to exist ({config})", e);
        }
        if (expected == actual) return;
        string breakdown = string.Join(", ", sections.Select(s => $"{s.Name} {s.Floats * sizeof(float)}"));
        throw new ModelFormatException(path,
            $"llama2.c file is {actual} bytes but its header implies {expected} bytes: header {HeaderBytes}, {breakdown}" +
            (config.TiedEmbeddings ? " (shared classifier)" : " (separate classifier)"));
    }

    /// <summary>The per-layer blocks in file order, each [L, ...]; RopeHeads &gt; 0 marks Q/K, stored interleaved.</summary>
    private static IEnumerable<(Func<LlamaLayerWeights, Tensor> Pick, int RopeHeads)> LayerBlocks(LlamaConfig c)
    {
        yield return (l => l.AttentionNorm, 0);
        yield return (l => l.Wq, c.Heads);
        yield return (l => l.Wk, c.KvHeads);
        yield return (l => l.Wv, 0);
        yield return (l => l.Wo, 0);
        yield return (l => l.FfnNorm, 0);
        yield return (l => l.W1, 0);
        yield return (l => l.W2, 0);
        yield return (l => l.W3, 0);
    }

    private static void ReadTensors(Stream stream, LlamaWeights w)
    {
        var c = w.Config;
        ReadInto(stream, w.TokenEmbedding);
        foreach (var (pick, ropeHeads) in LayerBlocks(c)) ReadPerLayer(stream, w, pick, ropeHeads);
        ReadInto(stream, w.FinalNorm);
        // The precomputed RoPE tables are not weights: skip them.
        stream.Seek(2L * c.MaxSeqLen * (c.HeadDim / 2) * sizeof(float), SeekOrigin.Current);
        if (!c.TiedEmbeddings) ReadInto(stream, w.Output);
    }

    /// <summary>Reads one [L, ...] block, layer by layer; <paramref name="ropeHeads"/> &gt; 0 marks Q/K to permute.</summary>
    private static void ReadPerLayer(Stream stream, LlamaWeights w, Func<LlamaLayerWeights, Tensor> pick, int ropeHeads = 0)
    {
        foreach (var layer in w.Layers) ReadInto(stream, pick(layer), ropeHeads, w.Config.HeadDim);
    }

    private static void ReadInto(Stream stream, Tensor tensor, int ropeHeads = 0, int headDim = 0)
    {
        var data = new float[tensor.Length];
        BinaryData.ReadFloats(stream, data);
        if (ropeHeads > 0) RopePermutation.InterleavedToHalfSplit(data, ropeHeads, headDim, tensor.Dim(1));
        tensor.CopyFrom(data);
    }

    private static void WriteTensors(Stream stream, LlamaWeights w)
    {
        var c = w.Config;
        WriteFrom(stream, w.TokenEmbedding);
        foreach (var (pick, ropeHeads) in LayerBlocks(c)) WritePerLayer(stream, w, pick, ropeHeads);
        WriteFrom(stream, w.FinalNorm);
        WriteRopeTables(stream, c);
        if (!c.TiedEmbeddings) WriteFrom(stream, w.Output);
    }

    private static void WritePerLayer(Stream stream, LlamaWeights w, Func<LlamaLayerWeights, Tensor> pick, int ropeHeads = 0)
    {
        foreach (var layer in w.Layers) WriteFrom(stream, pick(layer), ropeHeads, w.Config.HeadDim);
    }

    private static void WriteFrom(Stream stream, Tensor tensor, int ropeHeads = 0, int headDim = 0)
    {
        var data = tensor.ToArray();
        if (ropeHeads > 0) RopePermutation.HalfSplitToInterleaved(data, ropeHeads, headDim, tensor.Dim(1));
        BinaryData.WriteFloats(stream, data);
    }

    /// <summary>freq_cis_real and freq_cis_imag as llama2.c's export writes them: cos and sin of position * theta^(-2i/head_dim).</summary>
    private static void WriteRopeTables(Stream stream, LlamaConfig c)
    {
        int half = c.HeadDim / 2;
        var real = new float[c.MaxSeqLen * half];
        var imag = new float[real.Length];
        for (int pos = 0; pos < c.MaxSeqLen; pos++)
        for (int i = 0; i < half; i++)
        {
            double angle = pos * Math.Pow(c.RopeTheta, -2.0 * i / c.HeadDim);
            real[pos * half + i] = (float)Math.Cos(angle);
            imag[pos * half + i] = (float)Math.Sin(angle);
        }
        BinaryData.WriteFloats(stream, real);
        BinaryData.WriteFloats(stream, imag);
    }
}
