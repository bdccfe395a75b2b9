using System.Text;
using System.Text.Json;
using UioLlm.Model;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Tokenizers.TokenizerFixtures;

namespace UioLlm.Tests.Tokenizers;

public class ByteLevelBpeTests
{
    [DataTheory]
    [InlineData("encoder.json")]
    [InlineData("gguf")]
    public void LlamaCppVocabVectorsMatch(string source)
    {
        var tokenizer = Gpt2From(source);
        var cases = GgmlVectors("gpt2", "ggml-vocab-gpt-2.gguf");
        Assert.True(cases.Count >= 40, $"only {cases.Count} cases read");
        foreach (var (text, ids) in cases)
            SameIds(ids, tokenizer.Encode(text), $"{source}: '{text}'");
    }

    [DataTheory]
    [InlineData("encoder.json")]
    [InlineData("gguf")]
    public void MobyDickChapterOneMatches(string source)
    {
        int[] expected = JsonIds("tokenizers", "gpt2", "moby_dick_ch1.gpt2.json");
        // The file holds the plain encoding: no <|endoftext|> at either end.
        Assert.NotEqual(50256, expected[0]);
        SameIds(expected, Gpt2From(source).Encode(Text("moby_dick_ch1.txt")), "moby_dick_ch1");
    }

    [DataFact]
    public void VocabularyAndSpecialIds()
    {
        var t = Gpt2;
        Assert.Equal(50257, t.VocabSize);
        Assert.Equal(50000, t.MergeCount);
        Assert.Equal((50256, 50256), (t.BosId, t.EosId));
        Assert.Equal("Ġthe", t.TokenText(262));
        Assert.Equal(262, t.TokenId("Ġthe"));
        Assert.Equal([50256, 15496, 50256], t.Encode("Hello", addBos: true, addEos: true));
        Assert.Equal((50256, 50256), (Gpt2Gguf.BosId, Gpt2Gguf.EosId));
    }

    [DataTheory]
    [InlineData("encoder.json")]
    [InlineData("gguf")]
    public void DecodeInvertsEncodeOnRandomText(string source)
    {
        var tokenizer = Gpt2From(source);
        var rng = new Random(17);
        for (int trial = 0; trial < 300; trial++)
        {
            string text = RandomText(rng, rng.Next(0, 30));
            int[] ids = tokenizer.Encode(text);
            Assert.Equal(text, tokenizer.Decode(ids));
            Assert.Equal(text, Stream(tokenizer, ids));
        }
    }

    [DataFact]
    public void StreamingEqualsDecodeOnRandomIds()
    {
        var t = Gpt2;
        var rng = new Random(8);
        for (int trial = 0; trial < 200; trial++)
        {
            // Ids below 256 are single bytes (many of them UTF-8 lead or continuation bytes).
            int[] ids = Enumerable.Range(0, rng.Next(0, 40))
                .Select(_ => rng.Next(3) == 0 ? rng.Next(t.VocabSize) : rng.Next(256)).ToArray();
            Assert.Equal(t.Decode(ids), Stream(t, ids));
        }
        int[] llama = t.Encode("🦙");
        Assert.True(llama.Length > 1);
        var stream = t.NewStream();
        for (int i = 0; i < llama.Length - 1; i++) Assert.Equal("", stream.Push(llama[i]));
        Assert.Equal("🦙", stream.Push(llama[^1]));
    }

    [DataFact]
    public void TokenizerJsonEncodesLikeEncoderJson()
    {
        using var dir = new TempDir();
        string path = WriteTokenizerJson(dir, mergesAsArrays: false, addedTokens: []);
        var fromJson = ByteLevelBpeTokenizer.FromTokenizerJson(path);
        Assert.Equal(Gpt2.VocabSize, fromJson.VocabSize);
        Assert.Equal((50256, 50256), (fromJson.BosId, fromJson.EosId));
        foreach (var (text, ids) in GgmlVectors("gpt2", "ggml-vocab-gpt-2.gguf"))
            SameIds(ids, fromJson.Encode(text), $"tokenizer.json: '{text}'");
        var rng = new Random(4);
        for (int trial = 0; trial < 100; trial++)
        {
            string text = RandomText(rng, 20);
            SameIds(Gpt2.Encode(text), fromJson.Encode(text), $"'{text}'");
        }
        Assert.IsType<HuggingFaceTokenizer>(Tokenizer.Load(dir.Path)); // a folder with tokenizer.json
    }

    [DataFact]
    public void TokenizerJsonAddedTokensAreMatchedWholeAndConfigGivesBosEos()
    {
        using var dir = new TempDir();
        string path = WriteTokenizerJson(dir, mergesAsArrays: true, addedTokens: [("<|im start|>", 50257), ("<|endoftext|>", 50256)]);
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"bos_token": {"content": "<|im start|>"}, "eos_token": "<|endoftext|>"}""");
        var t = ByteLevelBpeTokenizer.FromTokenizerJson(path);
        Assert.Equal(50258, t.VocabSize);
        Assert.Equal((50257, 50256), (t.BosId, t.EosId));
        int[] ids = t.Encode("Hi<|im start|> there<|endoftext|>");
        Assert.Equal([.. Gpt2.Encode("Hi"), 50257, .. Gpt2.Encode(" there"), 50256], ids);
        Assert.Equal("Hi<|im start|> there<|endoftext|>", t.Decode(ids)); // added tokens decode to their literal text
    }

    [DataFact]
    public void BadTokenizerJsonFilesAreRejectedWithTheirNames()
    {
        using var dir = new TempDir();
        string good = File.ReadAllText(WriteTokenizerJson(dir, false, []));

        string Write(string name, string content) { string p = dir.File(name); File.WriteAllText(p, content); return p; }
        void Rejects(string name, string content, string expected)
        {
            string p = Write(name, content);
            var e = Assert.Throws<ModelFormatException>(() => ByteLevelBpeTokenizer.FromTokenizerJson(p));
            Assert.Contains(name, e.Message);
            Assert.Contains(expected, e.Message);
        }

        Rejects("truncated.json", good[..(good.Length / 2)], "not valid JSON");
        Rejects("wordpiece.json", good.Replace("\"type\":\"BPE\"", "\"type\":\"WordPiece\""), "model.type is 'WordPiece'");
        Rejects("metaspace.json", good.Replace("\"type\":\"ByteLevel\"", "\"type\":\"Metaspace\""), "pre_tokenizer");
        Rejects("normalizer.json", good.Replace("\"normalizer\":null", "\"normalizer\":{\"type\":\"NFC\"}"), "normalizer");
        Rejects("badmerge.json", good.Replace("\"merges\":[", "\"merges\":[\"Ġ zzzunknown\","), "merge 0");
        Rejects("gap.json", good.Replace("\"!\":0,", ""), "no token has id 0");
        Rejects("nomodel.json", "{}", "missing 'model'");
    }

    [DataFact]
    public void BadEncoderJsonAndVocabBpeAreRejected()
    {
        using var dir = new TempDir();
        string encoder = dir.File("encoder.json"), merges = dir.File("vocab.bpe");
        File.WriteAllText(encoder, "{\"a\": 0, \"b\": 1}");
        File.WriteAllText(merges, "#version: 0.2\na b\n");
        var e = Assert.Throws<ModelFormatException>(() => ByteLevelBpeTokenizer.FromEncoderJson(encoder, merges));
        Assert.Contains("encoder.json", e.Message);
        Assert.Contains("byte 0x00", e.Message); // byte-level BPE needs a token for every byte

        File.Copy(TestData.File("tokenizers", "gpt2", "encoder.json"), encoder, overwrite: true);
        File.WriteAllText(merges, "#version: 0.2\nĠ t\nthree parts here\n");
        e = Assert.Throws<ModelFormatException>(() => ByteLevelBpeTokenizer.FromEncoderJson(encoder, merges));
        Assert.Contains("vocab.bpe", e.Message);
        Assert.Contains("line 3", e.Message);
    }

    /// <summary>A Hugging Face tokenizer.json holding GPT-2's vocabulary and merges (written compactly).</summary>
    private static string WriteTokenizerJson(TempDir dir, bool mergesAsArrays, (string Content, int Id)[] addedTokens)
    {
        using var encoder = JsonDocument.Parse(File.ReadAllBytes(TestData.File("tokenizers", "gpt2", "encoder.json")));
        var merges = ByteLevelMerges();
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteStartArray("added_tokens");
            foreach (var (content, id) in addedTokens)
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", content);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", false);
            w.WriteBoolean("trim_offsets", true);
            w.WriteBoolean("use_regex", true);
            w.WriteEndObject();
            w.WriteStartObject("decoder");
            w.WriteString("type", "ByteLevel");
            w.WriteEndObject();
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("continuing_subword_prefix");
            w.WriteStartObject("vocab");
            foreach (var p in encoder.RootElement.EnumerateObject()) w.WriteNumber(p.Name, p.Value.GetInt32());
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (a, b) in merges)
            {
                if (!mergesAsArrays) { w.WriteStringValue($"{a} {b}"); continue; }
                w.WriteStartArray();
                w.WriteStringValue(a);
                w.WriteStringValue(b);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        string path = dir.File("tokenizer.json");
        File.WriteAllBytes(path, stream.ToArray());
        return path;
    }

    private static List<(string, string)> ByteLevelMerges() =>
        File.ReadAllLines(TestData.File("tokenizers", "gpt2", "vocab.bpe"), Encoding.UTF8)
            .Skip(1).Where(l => l.Length > 0).Select(l => (l[..l.IndexOf(' ')], l[(l.IndexOf(' ') + 1)..])).ToList();
}
