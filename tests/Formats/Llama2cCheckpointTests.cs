using System.Buffers.Binary;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Formats.FormatsTestSupport;

namespace UioLlm.Tests.Formats;

public class Llama2cCheckpointTests
{
    // stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, seq 512 (head_dim 8, kv_dim 32).
    private const int Dim = 64, Hidden = 172, Layers = 5, Heads = 8, KvHeads = 4, Vocab = 512, HeadDim = 8, KvDim = 32;
    private const long EmbFloats = Vocab * Dim, RmsAttFloats = Layers * Dim, WqFloats = Layers * Dim * Dim, WkFloats = Layers * KvDim * Dim;

    /// <summary>Float at index <paramref name="floatIndex"/> after the 28-byte header, read straight from the file bytes.</summary>
    private static float FileFloat(byte[] file, long floatIndex) =>
        BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan((int)(28 + 4 * floatIndex), 4));

    [DataFact]
    public void Loads_stories260K_config()
    {
        using var w = Llama2cCheckpoint.Load(Stories260K, TestBackend.Shared);
        var c = w.Config;
        Assert.Equal((Dim, Hidden, Layers, Heads, KvHeads, Vocab, 512), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.True(c.TiedEmbeddings);
        Assert.Same(w.TokenEmbedding, w.Output);
        Assert.Equal((1e-5f, 10000f, 1, 2), (c.NormEps, c.RopeTheta, c.BosId, c.EosId));
        Assert.Null(c.RopeScaling);
    }

    [DataFact]
    public void Weights_match_file_offsets_and_QK_are_permuted_to_half_split()
    {
        byte[] file = File.ReadAllBytes(Stories260K);
        using var w = Llama2cCheckpoint.Load(Stories260K, TestBackend.Shared);

        var emb = w.TokenEmbedding.ToArray();
        foreach (long i in new long[] { 0, 1, 63, 64, 1000, EmbFloats - 1 })
            Assert.Equal(FileFloat(file, i), emb[i]);

        const int layer = 3;
        long wqStart = EmbFloats + RmsAttFloats + (long)layer * Dim * Dim;
        long wkStart = EmbFloats + RmsAttFloats + WqFloats + (long)layer * KvDim * Dim;
        long wvStart = EmbFloats + RmsAttFloats + WqFloats + WkFloats + (long)layer * KvDim * Dim;
        var wq = w.Layers[layer].Wq.ToArray();
        var wk = w.Layers[layer].Wk.ToArray();
        var wv = w.Layers[layer].Wv.ToArray();
        // File row h*hd + 2i + j (interleaved pair i, member j) must land on row h*hd + j*hd/2 + i.
        for (int h = 0; h < Heads; h++)
        for (int i = 0; i < HeadDim / 2; i++)
        for (int j = 0; j < 2; j++)
        foreach (int col in new[] { 0, 17, Dim - 1 })
        {
            int fileRow = h * HeadDim + 2 * i + j, ourRow = h * HeadDim + j * HeadDim / 2 + i;
            Assert.Equal(FileFloat(file, wqStart + fileRow * Dim + col), wq[ourRow * Dim + col]);
            if (h < KvHeads)
            {
                Assert.Equal(FileFloat(file, wkStart + fileRow * Dim + col), wk[ourRow * Dim + col]);
                // V is not rotated: same row.
                Assert.Equal(FileFloat(file, wvStart + fileRow * Dim + col), wv[fileRow * Dim + col]);
            }
        }
        // The permutation really moves rows (pair 0 member 1 is file row 1, our row 4).
        Assert.NotEqual(FileFloat(file, wqStart + 1 * Dim), wq[1 * Dim]);

        long finalNorm = EmbFloats + 2 * RmsAttFloats + 2 * WqFloats + 2 * WkFloats + 3L * Layers * Hidden * Dim;
        var norm = w.FinalNorm.ToArray();
        for (int i = 0; i < Dim; i++) Assert.Equal(FileFloat(file, finalNorm + i), norm[i]);
        // The last float of w3 sits right before rms_final.
        Assert.Equal(FileFloat(file, finalNorm - 1), w.Layers[Layers - 1].W3.ToArray()[^1]);
    }

    [DataFact]
    public void Save_then_load_is_bit_exact_and_reproduces_the_file()
    {
        using var dir = new TempDir();
        string copy = dir.File("copy.bin");
        using var w = Llama2cCheckpoint.Load(Stories260K, TestBackend.Shared);
        Llama2cCheckpoint.Save(w, copy);
        using var again = Llama2cCheckpoint.Load(copy, TestBackend.Shared);
        AssertBitEqual(w, again);

        byte[] original = File.ReadAllBytes(Stories260K), saved = File.ReadAllBytes(copy);
        Assert.Equal(original.Length, saved.Length);
        // Header and weights are byte-identical (Q/K permuted back); the RoPE tables agree to float rounding.
        int ropeStart = original.Length - 2 * 512 * 4 * 4;
        Assert.True(original.AsSpan(0, ropeStart).SequenceEqual(saved.AsSpan(0, ropeStart)), "header and weights differ from the original file");
        for (int off = ropeStart; off < original.Length; off += 4)
            Assert.True(Math.Abs(BinaryPrimitives.ReadSingleLittleEndian(original.AsSpan(off)) - BinaryPrimitives.ReadSingleLittleEndian(saved.AsSpan(off))) < 1e-5,
                $"RoPE table differs at byte {off}");
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Untied_classifier_round_trips_with_negative_vocab()
    {
        using var dir = new TempDir();
        string path = dir.File("untied.bin");
        using var w = RandomWeights(TestBackend.Shared, tied: false);
        Llama2cCheckpoint.Save(w, path);
        var header = File.ReadAllBytes(path);
        Assert.Equal(-10, BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(20)));
        using var again = Llama2cCheckpoint.Load(path, TestBackend.Shared);
        AssertBitEqual(w, again);
        Assert.NotSame(again.TokenEmbedding, again.Output);
    }

    [Fact]
    public void Save_overwrites_an_existing_file()
    {
        using var dir = new TempDir();
        string path = dir.File("m.bin");
        File.WriteAllText(path, "old content");
        using var w = RandomWeights(TestBackend.Shared, tied: true);
        Llama2cCheckpoint.Save(w, path);
        using var again = Llama2cCheckpoint.Load(path, TestBackend.Shared);
        AssertBitEqual(w, again);
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [DataFact]
    public void Truncated_file_names_expected_and_actual_lengths()
    {
        using var dir = new TempDir();
        string path = dir.File("short.bin");
        byte[] bytes = File.ReadAllBytes(Stories260K);
        File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length - 4).ToArray());
        AssertFormatError(() => Llama2cCheckpoint.Load(path, TestBackend.Shared),
            path, "1056536 bytes", "1056540 bytes", "wq [L, dim, dim] 81920", "freq_cis_imag");
    }

    [Fact]
    public void Short_or_inconsistent_headers_are_rejected()
    {
        using var dir = new TempDir();
        string tiny = dir.File("tiny.bin");
        File.WriteAllBytes(tiny, new byte[10]);
        AssertFormatError(() => Llama2cCheckpoint.Load(tiny, TestBackend.Shared), tiny, "28 bytes", "has 10");

        string badHeads = dir.File("heads.bin");
        File.WriteAllBytes(badHeads, Header(64, 172, 5, 8, 3, 512, 512));
        AssertFormatError(() => Llama2cCheckpoint.Load(badHeads, TestBackend.Shared), badHeads, "n_kv_heads 3", "kv_heads");

        string zero = dir.File("zero.bin");
        File.WriteAllBytes(zero, Header(0, 172, 5, 8, 4, 512, 512));
        AssertFormatError(() => Llama2cCheckpoint.Load(zero, TestBackend.Shared), zero, "dim 0");

        // A huge but self-consistent header must fail on the length check, not try to allocate.
        string huge = dir.File("huge.bin");
        File.WriteAllBytes(huge, Header(65536, 1 << 30, 1 << 20, 64, 64, int.MaxValue, 1 << 30));
        AssertFormatError(() => Llama2cCheckpoint.Load(huge, TestBackend.Shared), huge, "too large");

        string missing = dir.File("absent.bin");
        var e = Assert.Throws<FileNotFoundException>(() => Llama2cCheckpoint.Load(missing, TestBackend.Shared));
        Assert.Contains(missing, e.Message);
    }

    private static byte[] Header(params int[] fields)
    {
        var b = new byte[4 * fields.Length + 64];
        for (int i = 0; i < fields.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4 * i), fields[i]);
        return b;
    }
}
