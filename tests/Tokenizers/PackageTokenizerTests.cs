using System.Text;
using System.Text.Json;
using UioLlm.Model;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Tokenizers.TokenizerFixtures;

namespace UioLlm.Tests.Tokenizers;

/// <summary>The tokenizers that run on Microsoft.ML.Tokenizers 3.0.0: tiktoken encodings and SentencePiece Unigram.</summary>
public class PackageTokenizerTests
{
    private static readonly Lazy<TiktokenEncoding> Cl100k = new(() => TiktokenEncoding.Create("cl100k_base"));
    private static readonly Lazy<TiktokenEncoding> O200k = new(() => TiktokenEncoding.Create("o200k_base"));

    [DataFact]
    public void Cl100kMatchesLlama3WhereTheirVocabulariesAgree()
    {
        // Llama 3's vocabulary is cl100k_base's 100,256 byte tokens and merges plus 28,000 later ones, with the same
        // split regex and ignore_merges (tiktoken's whole-word lookup). Where Llama 3's reference ids stay below
        // 100,256, no later merge applied, so cl100k must give the same ids: all of Moby Dick chapter 1 and every
        // reference case without a special-token literal.
        var cl100k = Cl100k.Value;
        int[] expected = File.ReadAllText(TestData.File("tokenizers", "hf-json", "llama3", "moby_dick_ch1.ids.txt"))
            .Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
        Assert.True(expected.Max() < 100256);
        string text = Text("moby_dick_ch1.txt");
        SameIds(expected, cl100k.Encode(text), "cl100k_base: moby_dick_ch1");
        Assert.Equal(text, cl100k.Decode(expected));
        Assert.Equal(text, Stream(cl100k, expected));
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.File("tokenizers", "hf-json", "llama3", "reference_cases.json")));
        int compared = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            int[] ids = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            string caseText = c.GetProperty("text").GetString()!;
            if (ids.Any(id => id >= 100256) || caseText.Contains("<|")) continue;
            SameIds(ids, cl100k.Encode(caseText), $"cl100k_base: '{caseText}'");
            compared++;
        }
        Assert.True(compared >= 35, $"only {compared} cases compared");
    }

    [Fact]
    public void TiktokenEncodingsRoundTripStreamAndKnowTheirSpecialTokens()
    {
        foreach (var t in new[] { Cl100k.Value, O200k.Value })
        {
            var rng = new Random(8);
            for (int trial = 0; trial < 100; trial++)
            {
                string text = RandomText(rng, rng.Next(0, 25)).Replace("\u0000", "");
                int[] ids = t.Encode(text);
                Assert.Equal(text, t.Decode(ids));
                Assert.Equal(text, Stream(t, ids));
            }
            Assert.Equal(t.EosId, t.Encode("<|endoftext|>").Single());
            Assert.Equal("<|endoftext|>", t.TokenText(t.EosId));
            Assert.Equal([t.EosId, .. t.Encode("hi")], t.Encode("hi", addBos: true));
        }
        Assert.Equal((100257, 100277), (Cl100k.Value.EosId, Cl100k.Value.VocabSize));
        Assert.Equal((199999, 200019), (O200k.Value.EosId, O200k.Value.VocabSize));
        // An id between the byte tokens and the special tokens that the encoding does not assign.
        Assert.Throws<ArgumentOutOfRangeException>(() => Cl100k.Value.Decode([100261]));
        Assert.IsType<TiktokenEncoding>(Tokenizer.Load("o200k_base"));
        Assert.Throws<ArgumentException>(() => TiktokenEncoding.Create("p50k_base"));
    }

    // ---- SentencePiece Unigram: a tiny model written both ways, against a brute-force best segmentation ----

    private static readonly (string Piece, float Score, int Type)[] UnigramPieces =
    [
        ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),
        ("▁", -2.0f, 1), ("a", -3.0f, 1), ("b", -3.2f, 1), ("c", -3.5f, 1), ("ab", -4.0f, 1), ("bc", -4.1f, 1),
        ("abc", -7.9f, 1), ("▁a", -3.1f, 1), ("▁ab", -5.5f, 1), ("▁b", -4.4f, 1), ("ca", -5.0f, 1), ("▁abc", -8.5f, 1),
        ("cab", -6.0f, 1), ("▁c", -3.9f, 1),
    ];

    /// <summary>The maximum-score segmentation of "▁" + text with spaces as "▁", by trying every split (the reference).</summary>
    private static int[] BestSegmentation(string text)
    {
        string s = "▁" + text.Replace(' ', '▁');
        var bestScore = new double[s.Length + 1];
        var bestIds = new List<int>?[s.Length + 1];
        bestIds[0] = [];
        for (int end = 1; end <= s.Length; end++)
        {
            bestScore[end] = double.NegativeInfinity;
            for (int start = 0; start < end; start++)
            {
                if (bestIds[start] is null) continue;
                int id = Array.FindIndex(UnigramPieces, p => p.Type == 1 && p.Piece == s[start..end]);
                if (id < 0) continue;
                double score = bestScore[start] + UnigramPieces[id].Score;
                if (score > bestScore[end]) { bestScore[end] = score; bestIds[end] = [.. bestIds[start]!, id]; }
            }
        }
        return bestIds[s.Length]!.ToArray();
    }

    private static string WriteUnigramModel(TempDir dir)
    {
        var model = new List<byte>();
        foreach (var (piece, score, type) in UnigramPieces)
        {
            var p = new List<byte>();
            Proto.Bytes(p, 1, Encoding.UTF8.GetBytes(piece));
            Proto.Float(p, 2, score);
            Proto.Varint(p, 3, (ulong)type);
            Proto.Bytes(model, 1, p.ToArray());
        }
        var trainer = new List<byte>();
        Proto.Varint(trainer, 3, 1); // UNIGRAM
        Proto.Varint(trainer, 40, 0);
        Proto.Varint(trainer, 41, 1);
        Proto.Varint(trainer, 42, 2);
        Proto.Bytes(model, 2, trainer.ToArray());
        var normalizer = new List<byte>();
        Proto.Bytes(normalizer, 1, "identity"u8.ToArray());
        Proto.Varint(normalizer, 3, 1); // add_dummy_prefix
        Proto.Varint(normalizer, 4, 0); // remove_extra_whitespaces
        Proto.Varint(normalizer, 5, 1); // escape_whitespaces
        Proto.Bytes(model, 3, normalizer.ToArray());
        string path = dir.File("tokenizer.model");
        File.WriteAllBytes(path, model.ToArray());
        return path;
    }

    private static string WriteUnigramJson(TempDir dir)
    {
        string vocab = string.Join(',', UnigramPieces.Select(p => $"[{JsonSerializer.Serialize(p.Piece)}, {p.Score.ToString(System.Globalization.CultureInfo.InvariantCulture)}]"));
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, """
        {"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
         "normalizer": null,
         "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": false},
         "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": false},
         "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": false, "vocab": [
        """ + vocab + "]}}");
        return path;
    }

    [Fact]
    public void UnigramModelsEncodeAsTheBestSegmentationAndDecodeBack()
    {
        using var dir = new TempDir();
        var fromModel = Tokenizer.Load(WriteUnigramModel(dir));
        var fromJson = Tokenizer.Load(WriteUnigramJson(dir));
        Assert.IsType<UnigramTokenizer>(fromModel);
        Assert.IsType<UnigramTokenizer>(fromJson);
        var rng = new Random(2);
        for (int trial = 0; trial < 300; trial++)
        {
            int n = rng.Next(1, 9);
            var sb = new StringBuilder();
            for (int i = 0; i < n; i++) sb.Append("abc "[rng.Next(i == 0 || i == n - 1 ? 3 : 4)]);
            string text = sb.ToString().Replace("  ", " ");
            int[] expected = BestSegmentation(text);
            foreach (var (name, t) in new[] { ("tokenizer.model", fromModel), ("tokenizer.json", fromJson) })
            {
                int[] ids = t.Encode(text);
                Assert.True(expected.SequenceEqual(ids), $"{name} '{text}': expected [{string.Join(' ', expected)}], got [{string.Join(' ', ids)}]");
                Assert.Equal(text, t.Decode(ids));
                Assert.Equal(text, Stream(t, ids));
            }
        }
        Assert.Equal((1, 2), (fromModel.BosId, fromModel.EosId));
        Assert.Equal([1, .. BestSegmentation("ab c"), 2], fromModel.Encode("ab c", addBos: true, addEos: true));
        Assert.Equal(0, fromModel.Encode("ab x c").Single(id => id == 0)); // a character no piece covers: the unknown id
    }

    [Fact]
    public void NonUnigramModelProtoIsRefusedByTheUnigramReader()
    {
        using var dir = new TempDir();
        string path = dir.File("bpe.model");
        var model = new List<byte>();
        var p = new List<byte>();
        Proto.Bytes(p, 1, "a"u8.ToArray());
        Proto.Bytes(model, 1, p.ToArray());
        var trainer = new List<byte>();
        Proto.Varint(trainer, 3, 3); // WORD
        Proto.Bytes(model, 2, trainer.ToArray());
        File.WriteAllBytes(path, model.ToArray());
        var e = Assert.Throws<ModelFormatException>(() => UnigramTokenizer.FromModelFile(path));
        Assert.Contains("bpe.model", e.Message);
        Assert.Contains("expected UNIGRAM", e.Message);
    }

    /// <summary>Protobuf wire encoding, enough for a ModelProto.</summary>
    private static class Proto
    {
        public static void Varint(List<byte> o, int field, ulong value) { Raw(o, (ulong)(field << 3)); Raw(o, value); }
        public static void Float(List<byte> o, int field, float value) { Raw(o, (ulong)(field << 3 | 5)); o.AddRange(BitConverter.GetBytes(value)); }
        public static void Bytes(List<byte> o, int field, byte[] value) { Raw(o, (ulong)(field << 3 | 2)); Raw(o, (ulong)value.Length); o.AddRange(value); }
        private static void Raw(List<byte> o, ulong v) { while (v >= 0x80) { o.Add((byte)(v | 0x80)); v >>= 7; } o.Add((byte)v); }
    }
}
