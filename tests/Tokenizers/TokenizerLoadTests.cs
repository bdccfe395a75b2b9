using System.Text;
using UioLlm.Model;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Tokenizers;

public class TokenizerLoadTests
{
    private static string Llama2(string name) => TestData.File("tokenizers", "llama2", name);
    private static string Gpt2(string name) => TestData.File("tokenizers", "gpt2", name);

    [DataFact]
    public void LoadDetectsEveryFormat()
    {
        const string text = "Call me Ishmael. Some years ago";
        int[] llama = TokenizerFixtures.LlamaModel.Encode(text);
        int[] gpt2 = TokenizerFixtures.Gpt2.Encode(text);
        foreach (string path in new[] { Llama2("tokenizer.model"), Llama2("tokenizer.bin"), Llama2("ggml-vocab-llama-spm.gguf") })
        {
            var t = Tokenizer.Load(path);
            Assert.IsType<SentencePieceTokenizer>(t);
            Assert.Equal(llama, t.Encode(text));
        }
        foreach (string path in new[] { Gpt2("encoder.json"), Gpt2("vocab.bpe"), Gpt2("ggml-vocab-gpt-2.gguf"), Path.GetDirectoryName(Gpt2("encoder.json"))! })
        {
            var t = Tokenizer.Load(path);
            Assert.IsType<ByteLevelBpeTokenizer>(t);
            Assert.Equal(gpt2, t.Encode(text));
        }

        using var dir = new TempDir();
        File.Copy(Llama2("tokenizer.bin"), dir.File("tokenizer.bin"));
        Assert.Equal(llama, Tokenizer.Load(dir.Path).Encode(text));              // folder with tokenizer.bin
        File.Copy(Llama2("tokenizer.model"), dir.File("tokenizer.model"));
        Assert.Equal(llama, Tokenizer.Load(dir.Path).Encode(text));              // tokenizer.model wins
        File.Copy(Llama2("tokenizer.model"), dir.File("renamed"));
        Assert.Equal(llama, Tokenizer.Load(dir.File("renamed")).Encode(text));   // sniffed: protobuf
        File.Copy(Llama2("tokenizer.bin"), dir.File("renamed2"));
        Assert.Equal(llama, Tokenizer.Load(dir.File("renamed2")).Encode(text));  // sniffed: llama2.c layout
    }

    [Fact]
    public void LoadReportsMissingAndEmptyPlaces()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(dir.Path));
        Assert.Contains(dir.Path, e.Message);
        Assert.Throws<FileNotFoundException>(() => Tokenizer.Load(dir.File("nothing.model")));
        File.WriteAllText(dir.File("encoder.json"), "{}");
        e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(dir.File("encoder.json")));
        Assert.Contains("vocab.bpe", e.Message);
    }

    [Fact]
    public void SyntheticModelUserDefinedUnusedUnknownAndExtraWhitespace()
    {
        using var dir = new TempDir();
        string path = dir.File("tiny.model");
        File.WriteAllBytes(path, new SentencePieceModelWriter
        {
            Pieces =
            [
                ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3), ("<sep>", 0, 4), ("\u2581", -10, 1), ("a", -10, 1),
                ("b", -10, 1), ("c", -10, 1), ("ab", -1, 1), ("abc", -2, 5), ("\u2581ab", -3, 1),
            ],
            RemoveExtraWhitespaces = true,
        }.ToArray());
        var t = SentencePieceTokenizer.FromModelFile(path);
        Assert.False(t.UsesWordSplitting); // UNUSED pieces: whole-text encoding
        Assert.Equal("\u2581ab<sep>abc\u2581xyz", t.Normalize("  ab<sep>abc   xyz "));
        // "▁ab" | <sep> whole | "abc" (UNUSED) split back into "ab" "c" | "▁" | x y z unknown, collapsed into one <unk>
        int[] ids = t.Encode("  ab<sep>abc   xyz ", addBos: true);
        Assert.Equal([1, 10, 3, 8, 7, 4, 0], ids);
        Assert.Equal("ab<sep>abc  \u2047 ", t.Decode(ids));
        Assert.Equal(t.Decode(ids), TokenizerFixtures.Stream(t, ids));
        Assert.Equal([], t.Encode("   "));
    }

    [Fact]
    public void PiecesThatCrossWordStartsDisableWordSplitting()
    {
        using var dir = new TempDir();
        string path = dir.File("cross.model");
        // "a▁" merges across the start of the word "▁b": cutting the text before "▁b" would give ▁, a, ▁b instead.
        File.WriteAllBytes(path, new SentencePieceModelWriter
        {
            Pieces = [("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3), ("\u2581", -10, 1), ("a", -10, 1), ("b", -10, 1), ("a\u2581", -1, 1), ("\u2581b", -2, 1)],
        }.ToArray());
        var t = SentencePieceTokenizer.FromModelFile(path);
        Assert.False(t.UsesWordSplitting);
        Assert.Equal([3, 6, 5], t.Encode("a b"));
        Assert.Equal("a b", t.Decode(t.Encode("a b")));
    }

    [Fact]
    public void BadModelFilesAreRejectedWithTheirNames()
    {
        using var dir = new TempDir();
        var valid = new SentencePieceModelWriter { Pieces = [("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3), ("a", 0, 1)] };
        void Rejects(string name, byte[] bytes, string expected)
        {
            string p = dir.File(name);
            File.WriteAllBytes(p, bytes);
            var e = Assert.Throws<ModelFormatException>(() => SentencePieceTokenizer.FromModelFile(p));
            Assert.Contains(name, e.Message);
            Assert.Contains(expected, e.Message);
        }

        byte[] good = valid.ToArray();
        Rejects("truncated.model", good[..(good.Length - 3)], "runs past the end");
        Rejects("unigram.model", (valid with { ModelType = 1 }).ToArray(), "UNIGRAM");
        Rejects("charsmap.model", (valid with { CharsMap = [1, 2, 3] }).ToArray(), "precompiled_charsmap");
        Rejects("badtype.model", (valid with { Pieces = [("<unk>", 0, 2), ("x", 0, 9)] }).ToArray(), "token type 9");
        Rejects("badbos.model", (valid with { BosId = 40 }).ToArray(), "bos id 40");
        Rejects("empty.model", [], "no pieces");
        Rejects("garbage.model", [0xFF, 0xFF, 0xFF], "varint");
    }

    [DataFact]
    public void BadLlama2cFilesAreRejectedWithTheirNames()
    {
        using var dir = new TempDir();
        byte[] real = File.ReadAllBytes(Llama2("tokenizer.bin"));
        void Rejects(string name, byte[] bytes, string expected)
        {
            string p = dir.File(name);
            File.WriteAllBytes(p, bytes);
            var e = Assert.Throws<ModelFormatException>(() => SentencePieceTokenizer.FromLlama2cFile(p));
            Assert.Contains(name, e.Message);
            Assert.Contains(expected, e.Message);
        }

        Rejects("cut.bin", real[..1000], "token");
        Rejects("short.bin", real[..2], "max_token_length");
        byte[] badLength = (byte[])real.Clone();
        BitConverter.GetBytes(-5).CopyTo(badLength, 8); // token 0's length
        Rejects("negative.bin", badLength, "length -5");
        Rejects("tiny.bin", real[..(4 + 8 + 5)], "expected at least unk, BOS and EOS");
    }

    [Fact]
    public void GgufVocabulariesAreReadAndCheckedByHand()
    {
        using var dir = new TempDir();
        string[] tokens = ["<unk>", "<s>", "</s>", "\u2581", "h", "i", "\u2581h", "\u2581hi", "<0x21>"];
        float[] scores = [0, 0, 0, -5, -5, -5, -1, -0.5f, 0];
        int[] types = [2, 3, 3, 1, 1, 1, 1, 1, 6];
        string good = LlamaVocabGguf(tokens, scores, types, "llama").WriteTo(dir, "tiny.gguf");
        var t = Tokenizer.Load(good);
        Assert.Equal([1, 7, 8, 6], t.Encode("hi! h", addBos: true)); // ▁hi, byte 0x21, ▁h
        Assert.Equal("hi! h", t.Decode(t.Encode("hi! h", addBos: true)));

        var e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(LlamaVocabGguf(tokens, scores, types, "bert").WriteTo(dir, "bert.gguf")));
        Assert.Contains("bert.gguf", e.Message);
        Assert.Contains("'bert'", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(LlamaVocabGguf(tokens, scores, types[..5], "llama").WriteTo(dir, "types.gguf")));
        Assert.Contains("types.gguf", e.Message);
        Assert.Contains("token_type", e.Message);
        e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(LlamaVocabGguf(tokens, scores[..3], types, "llama").WriteTo(dir, "scores.gguf")));
        Assert.Contains("3 scores for 9 pieces", e.Message);
        File.WriteAllBytes(dir.File("notgguf.gguf"), [1, 2, 3, 4, 5]);
        e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(dir.File("notgguf.gguf")));
        Assert.Contains("notgguf.gguf", e.Message);
    }

    private static GgufBuilder LlamaVocabGguf(string[] tokens, float[] scores, int[] types, string model)
    {
        var b = new GgufBuilder().Header(3, 0, 4).KvString("tokenizer.ggml.model", model);
        b.Str("tokenizer.ggml.tokens").U32(9).U32(8).U64((ulong)tokens.Length);
        foreach (string s in tokens) b.Str(s);
        b.Str("tokenizer.ggml.scores").U32(9).U32(6).U64((ulong)scores.Length);
        foreach (float f in scores) b.F32(f);
        b.Str("tokenizer.ggml.token_type").U32(9).U32(5).U64((ulong)types.Length);
        foreach (int i in types) b.U32((uint)i);
        return b;
    }

    /// <summary>Writes a sentencepiece ModelProto with the fields the reader uses.</summary>
    private sealed record SentencePieceModelWriter
    {
        public required (string Piece, float Score, int Type)[] Pieces { get; init; }
        public int ModelType { get; init; } = 2;
        public int BosId { get; init; } = 1;
        public bool RemoveExtraWhitespaces { get; init; }
        public byte[] CharsMap { get; init; } = [];

        public byte[] ToArray()
        {
            var model = new MemoryStream();
            foreach (var (piece, score, type) in Pieces)
            {
                var p = new MemoryStream();
                Bytes(p, 1, Encoding.UTF8.GetBytes(piece));
                Key(p, 2, 5);
                p.Write(BitConverter.GetBytes(score));
                Varint(p, 3, (ulong)type);
                Bytes(model, 1, p.ToArray());
            }
            var trainer = new MemoryStream();
            Varint(trainer, 3, (ulong)ModelType);
            Varint(trainer, 40, 0);
            Varint(trainer, 41, (ulong)(long)BosId);
            Varint(trainer, 43, unchecked((ulong)-1L)); // pad_id -1: a 10-byte varint
            Bytes(model, 2, trainer.ToArray());
            var normalizer = new MemoryStream();
            Bytes(normalizer, 1, "identity"u8.ToArray());
            Bytes(normalizer, 2, CharsMap);
            Varint(normalizer, 3, 1);
            Varint(normalizer, 4, RemoveExtraWhitespaces ? 1UL : 0UL);
            Bytes(model, 3, normalizer.ToArray());
            return model.ToArray();
        }

        private static void Key(Stream s, int field, int wire) => RawVarint(s, (ulong)(field << 3 | wire));
        private static void Varint(Stream s, int field, ulong v) { Key(s, field, 0); RawVarint(s, v); }
        private static void Bytes(Stream s, int field, byte[] b) { Key(s, field, 2); RawVarint(s, (ulong)b.Length); s.Write(b); }

        private static void RawVarint(Stream s, ulong v)
        {
            while (v >= 0x80) { s.WriteByte((byte)(v | 0x80)); v >>= 7; }
            s.WriteByte((byte)v);
        }
    }
}
