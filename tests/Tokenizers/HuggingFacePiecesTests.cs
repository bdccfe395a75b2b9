using System.Text;
using UioLlm.Model;
using UioLlm.Model.Tokenizers;
using UioLlm.Model.Tokenizers.HuggingFace;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Tokenizers.TokenizerFixtures;

namespace UioLlm.Tests.Tokenizers;

/// <summary>The parts of the tokenizer.json engine on small cases, and its properties on random text.</summary>
public class HuggingFacePiecesTests
{
    private static string[] Pieces(PreTokenizerStep step, string text, bool atStart = true)
    {
        var output = new List<Piece>();
        step.Split(new Piece(text, 0, text.Length, atStart), output);
        return output.Select(p => p.Span.ToString()).ToArray();
    }

    [Theory]
    // The delimiter behaviours as Hugging Face documents them, on "the-final--countdown" split at "-".
    [InlineData("Removed", "the|final|countdown")]
    [InlineData("Isolated", "the|-|final|-|-|countdown")]
    [InlineData("MergedWithPrevious", "the-|final-|-|countdown")]
    [InlineData("MergedWithNext", "the|-final|-|-countdown")]
    [InlineData("Contiguous", "the|-|final|--|countdown")]
    public void SplitBehaviours(string behavior, string expected)
    {
        var split = new SplitPreTokenizer(new LiteralPattern("-"), Enum.Parse<SplitBehavior>(behavior), false);
        Assert.Equal(expected, string.Join('|', Pieces(split, "the-final--countdown")));
    }

    [Fact]
    public void SplitInvertDigitsMetaspaceWhitespace()
    {
        // invert: the non-matching stretches are the "matches": with Removed, only the matches stay.
        Assert.Equal(["-", "-", "-"], Pieces(new SplitPreTokenizer(new LiteralPattern("-"), SplitBehavior.Removed, true), "the-final--countdown"));
        Assert.Equal(["abc", "1", "2", "3", "d", "4"], Pieces(new DigitsPreTokenizer(true), "abc123d4"));
        Assert.Equal(["abc", "123", "d", "4"], Pieces(new DigitsPreTokenizer(false), "abc123d4"));
        Assert.Equal(["▁Hey", "▁friend!", "▁", "▁how"], Pieces(new MetaspacePreTokenizer('▁', "always", true), "Hey friend!  how"));
        Assert.Equal(["▁Hey▁you"], Pieces(new MetaspacePreTokenizer('▁', "always", false), "Hey you"));
        Assert.Equal(["Hey", "▁you"], Pieces(new MetaspacePreTokenizer('▁', "first", true), "Hey you", atStart: false));
        Assert.Equal(["▁Hey", "▁you"], Pieces(new MetaspacePreTokenizer('▁', "first", true), "Hey you", atStart: true));
        Assert.Equal(["a", "b", "c"], Pieces(new WhitespaceSplitPreTokenizer(), " a \t b\nc  "));
        Assert.Equal(["Ġhello"[1..].Insert(0, " "), " world"], Pieces(new ByteLevelPreTokenizer(true, true), "hello world"));
    }

    [Fact]
    public void HandWrittenSplittersEqualTheRegexEngine()
    {
        // The fast matchers of the Llama 3 / Qwen / GPT-2 regexes against .NET's regex engine on the same patterns,
        // on random text rich in the cases that matter (contractions, digits, whitespace runs, CR/LF, supplementary letters).
        var cases = new (SplitPattern Fast, string Regex)[]
        {
            (new WordsDigitsPattern(3), WordsDigitsPattern.Llama3Regex),
            (new WordsDigitsPattern(1), WordsDigitsPattern.QwenRegex),
            (new Gpt2Pattern(), Gpt2PreTokenizer.Pattern),
        };
        var rng = new Random(5);
        foreach (var (fast, regex) in cases)
        {
            var slow = new RegexPattern(regex, "test");
            for (int trial = 0; trial < 400; trial++)
            {
                string text = RandomText(rng, rng.Next(1, 25)) + (rng.Next(4) == 0 ? "'S 'LL\r\n\r\n 12345 \n " : "");
                var a = new List<(int, int)>();
                var b = new List<(int, int)>();
                fast.FindMatches(text, 0, text.Length, a);
                slow.FindMatches(text, 0, text.Length, b);
                Assert.True(a.SequenceEqual(b), $"{regex} on '{text}': fast [{string.Join(' ', a)}] regex [{string.Join(' ', b)}]");
            }
        }
    }

    [Fact]
    public void RegexPatternSeesSupplementaryLettersAsLetters()
    {
        var pattern = new RegexPattern(@"\p{L}+|\p{N}+|\s+|[^\s\p{L}\p{N}]+", "test");
        var matches = new List<(int, int)>();
        const string text = "a𝐀𝐁b 𝟘𝟙7 🦙";
        pattern.FindMatches(text, 0, text.Length, matches);
        Assert.Equal(["a𝐀𝐁b", " ", "𝟘𝟙7", " ", "🦙"], matches.Select(m => text[m.Item1..m.Item2]).ToArray());
    }

    [Fact]
    public void NormalizersDoWhatTheirNamesSay()
    {
        Assert.Equal("é", new UnicodeNormalizer(NormalizationForm.FormC).Normalize("e\u0301"));
        Assert.Equal("e\u0301", new UnicodeNormalizer(NormalizationForm.FormD).Normalize("é"));
        Assert.Equal("fi2", new UnicodeNormalizer(NormalizationForm.FormKC).Normalize("ﬁ²"));
        Assert.Equal("a\uD800bé", new UnicodeNormalizer(NormalizationForm.FormC).Normalize("a\uD800be\u0301")); // lone surrogate kept
        Assert.Equal("hello wörld", new LowercaseNormalizer().Normalize("HeLLo WÖRLD"));
        Assert.Equal("x ", new StripNormalizer(true, false).Normalize(" \t x "));
        Assert.Equal(" x", new StripNormalizer(false, true).Normalize(" x \n"));
        Assert.Equal("▁a▁b", new SequenceNormalizer([new PrependNormalizer("▁"), new ReplaceNormalizer(" ", null, "▁")]).Normalize("a b"));
        Assert.Equal("", new PrependNormalizer("▁").Normalize(""));
        Assert.Equal("a_b_c", new ReplaceNormalizer(null, new System.Text.RegularExpressions.Regex(@"\s+"), "_").Normalize("a  b\tc"));
    }

    [Fact]
    public void AddedTokensHonourLstripRstripAndSingleWord()
    {
        var mask = new AddedToken(100, "<mask>", true, false, Lstrip: true, Rstrip: true, SingleWord: false);
        var word = new AddedToken(101, "cat", false, false, false, false, SingleWord: true);
        var matcher = new AddedTokenMatcher([(mask.Content, mask), (word.Content, word)]);
        string Show(string text)
        {
            var segments = new List<(int Start, int End, int Id)>();
            matcher.Split(text, 0, text.Length, segments);
            return string.Join('|', segments.Select(s => s.Id >= 0 ? $"[{s.Id}:{text[s.Start..s.End]}]" : text[s.Start..s.End]));
        }
        Assert.Equal("a|[100: <mask>  ]|b", Show("a <mask>  b"));
        Assert.Equal("the |[101:cat]| sat", Show("the cat sat"));
        Assert.Equal("concatenate cats", Show("concatenate cats")); // not a word of its own: left as text
        Assert.Equal("[100:<mask>]|[100:<mask>]", Show("<mask><mask>"));
        Assert.Equal("", Show(""));
    }

    [DataTheory]
    [MemberData(nameof(HuggingFaceTokenizerTests.Folders), MemberType = typeof(HuggingFaceTokenizerTests))]
    public void RandomTextRoundTripsAndStreamsInPieces(string folder)
    {
        var t = HfJson(folder);
        var rng = new Random(11);
        for (int trial = 0; trial < 200; trial++)
        {
            string text = RandomText(rng, rng.Next(0, 30));
            int[] ids = t.Encode(text);
            string expected = folder == "qwen3" ? new UnicodeNormalizer(NormalizationForm.FormC).Normalize(text) : text;
            Assert.Equal(expected, t.Decode(ids));
            Assert.Equal(expected, Stream(t, ids));
        }
    }

    [DataTheory]
    [MemberData(nameof(HuggingFaceTokenizerTests.Folders), MemberType = typeof(HuggingFaceTokenizerTests))]
    public void StreamEqualsDecodeOnArbitraryIds(string folder)
    {
        // Random id sequences (byte tokens, partial characters, special tokens, leading spaces): the streamed pieces
        // always add up to the whole decode, which is what generation prints.
        var t = HfJson(folder);
        var rng = new Random(3);
        int[] interesting = folder == "spm-bpe-32k" ? [0, 1, 2, 3, 13, 28705, 259, 240, 136, 144, 243, 162, 169, 156, 250, 22557]
            : [220, 256, 198, 9468, 99, 247, 236, 231, 0, 128000 % t.VocabSize, t.VocabSize - 1, 15339];
        for (int trial = 0; trial < 300; trial++)
        {
            int n = rng.Next(0, 12);
            int[] ids = new int[n];
            for (int i = 0; i < n; i++) ids[i] = rng.Next(2) == 0 ? interesting[rng.Next(interesting.Length)] : rng.Next(t.VocabSize);
            Assert.Equal(t.Decode(ids), Stream(t, ids));
        }
    }

    [DataFact]
    public void SpmByteFallbackDecodesInvalidRunsAsOneReplacementPerByte()
    {
        var t = HfJson("spm-bpe-32k");
        int b0xE2 = t.TokenId("<0xE2>"), b0x82 = t.TokenId("<0x82>"), hello = t.TokenId("▁Hello");
        Assert.True(b0xE2 > 0 && b0x82 > 0 && hello > 0);
        Assert.Equal("\uFFFD\uFFFD Hello", t.Decode([b0xE2, b0x82, hello]));
        Assert.Equal("\uFFFD\uFFFD Hello", Stream(t, [b0xE2, b0x82, hello]));
        Assert.Equal("€", t.Decode([b0xE2, b0x82, t.TokenId("<0xAC>")]));
        var stream = t.NewStream();
        Assert.Equal("", stream.Push(b0xE2)); // held until the run is known to be complete
        Assert.Equal("", stream.Push(b0x82));
        Assert.Equal("", stream.Push(t.TokenId("<0xAC>")));
        Assert.Equal("€", stream.Flush());
    }

    [DataFact]
    public void SpecialTokensBosEosAndSkipping()
    {
        var llama3 = HfJson("llama3");
        Assert.Equal((128000, 128001), (llama3.BosId, llama3.EosId));
        Assert.Equal(128256, llama3.VocabSize);
        Assert.Equal([128000, 9906, 128001], llama3.Encode("Hello", addBos: true, addEos: true));
        Assert.Equal("Hello", llama3.Decode([128000, 9906, 128001], skipSpecialTokens: true));
        Assert.Equal("<|begin_of_text|>Hello", llama3.Decode([128000, 9906]));
        var qwen = HfJson("qwen3");
        Assert.Equal((-1, qwen.TokenId("<|im_end|>")), (qwen.BosId, qwen.EosId));
        Assert.Equal([qwen.TokenId("<think>"), 14990], qwen.Encode("<think>hello"));
        var spm = HfJson("spm-bpe-32k");
        Assert.Equal((1, 2), (spm.BosId, spm.EosId));
        Assert.Equal([1], spm.SpecialIdsBefore);
        Assert.Empty(spm.SpecialIdsAfter);
        Assert.IsType<HuggingFaceTokenizer>(Tokenizer.Load(Path.GetDirectoryName(TestData.File("tokenizers", "hf-json", "qwen3", "tokenizer.json"))!));
    }

    [DataFact]
    public void Gpt2AsTokenizerJsonMatchesTheLlamaCppVectors()
    {
        // GPT-2's vocabulary written as a tokenizer.json with a ByteLevel pre-tokenizer (use_regex true) and a
        // ByteLevel decoder: the GPT-2 regex path of the engine.
        using var dir = new TempDir();
        string path = WriteGpt2TokenizerJson(dir);
        var t = HuggingFaceTokenizer.FromFile(path);
        foreach (var (text, ids) in GgmlVectors("gpt2", "ggml-vocab-gpt-2.gguf"))
            SameIds(ids, t.Encode(text), $"'{text}'");
        SameIds(JsonIds("tokenizers", "gpt2", "moby_dick_ch1.gpt2.json"), t.Encode(Text("moby_dick_ch1.txt")), "moby_dick_ch1");
    }

    [Fact]
    public void BpeModelByteFallbackUnknownAndAffixes()
    {
        using var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        // A char-level BPE with "##" continuing prefix, byte fallback for "é" and an unknown token for what has neither.
        File.WriteAllText(path, """
        {"model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true, "continuing_subword_prefix": "##",
          "vocab": {"<unk>": 0, "a": 1, "##b": 2, "ab": 3, "##c": 4, "abc": 5, "<0xC3>": 6, "<0xA9>": 7, "x": 8, "##x": 9},
          "merges": ["a ##b", "ab ##c"]},
         "pre_tokenizer": {"type": "WhitespaceSplit"},
         "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}}
        """);
        var t = HuggingFaceTokenizer.FromFile(path);
        Assert.Equal([5, 1, 8, 6, 7], t.Encode("abc a x é"));
        Assert.Equal([1, 0], t.Encode("aqq")); // q twice: no token, no byte fallback pieces (bytes 0x71 absent): one fused unknown
        Assert.Equal("abcaxé", t.Decode([5, 1, 8, 6, 7]));
    }

    [Fact]
    public void BadTokenizerJsonIsRejectedNamingTheField()
    {
        using var dir = new TempDir();
        const string good = """
        {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]},
         "normalizer": null, "pre_tokenizer": null, "decoder": {"type": "Fuse"}}
        """;
        void Rejects(string name, string content, string expected)
        {
            string p = dir.File(name);
            File.WriteAllText(p, content);
            var e = Assert.Throws<ModelFormatException>(() => Tokenizer.Load(p));
            Assert.Contains(name, e.Message);
            Assert.Contains(expected, e.Message);
        }
        Assert.Equal([2], Tokenizer.Load(WriteFile(dir, "ok.json", good)).Encode("ab"));
        Rejects("wordpiece.json", good.Replace("\"BPE\"", "\"WordPiece\""), "model.type is 'WordPiece'");
        Rejects("norm.json", good.Replace("\"normalizer\": null", "\"normalizer\": {\"type\": \"BertNormalizer\"}"), "normalizer is type 'BertNormalizer'");
        Rejects("pre.json", good.Replace("\"pre_tokenizer\": null", "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Punctuation\"}]}"),
            "pre_tokenizer.pretokenizers[0] is type 'Punctuation'");
        Rejects("dec.json", good.Replace("{\"type\": \"Fuse\"}", "{\"type\": \"WordPiece\"}"), "decoder is type 'WordPiece'");
        Rejects("merge.json", good.Replace("[[\"a\", \"b\"]]", "[[\"a\", \"zz\"]]"), "model.merges[0]: 'zz' is not in model.vocab");
        Rejects("mergeform.json", good.Replace("[[\"a\", \"b\"]]", "[\"a b c\"]"), "model.merges[0]");
        Rejects("id.json", good.Replace("\"ab\": 2", "\"ab\": 2147483647"), "model.vocab: token 'ab' has id 2147483647");
        Rejects("sparse.json", good.Replace("\"ab\": 2", "\"ab\": 9000000"), "ids are sparse");
        Rejects("dup.json", good.Replace("\"ab\": 2", "\"ab\": 1"), "id 1 is given to both");
        Rejects("added.json", good.Replace("\"normalizer\"", "\"added_tokens\": [{\"id\": -4, \"content\": \"x\"}], \"normalizer\""), "added_tokens[0].id is -4");
        Rejects("unk.json", good.Replace("\"type\": \"BPE\",", "\"type\": \"BPE\", \"unk_token\": \"<nope>\","), "model.unk_token '<nope>'");
        Rejects("trunc.json", good[..40], "not valid JSON");
        Rejects("regex.json", good.Replace("\"pre_tokenizer\": null", "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}"), "not supported by the .NET regex engine");
    }

    private static string WriteFile(TempDir dir, string name, string content)
    {
        string p = dir.File(name);
        File.WriteAllText(p, content);
        return p;
    }

    /// <summary>GPT-2's encoder.json + vocab.bpe as a tokenizer.json (merges as "a b" strings).</summary>
    private static string WriteGpt2TokenizerJson(TempDir dir)
    {
        string encoder = File.ReadAllText(TestData.File("tokenizers", "gpt2", "encoder.json"));
        var merges = File.ReadAllLines(TestData.File("tokenizers", "gpt2", "vocab.bpe")).Skip(1).Where(l => l.Length > 0)
            .Select(l => System.Text.Json.JsonSerializer.Serialize(l));
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, "{\"added_tokens\":[{\"id\":50256,\"content\":\"<|endoftext|>\",\"special\":true,\"normalized\":false}]," +
            "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}," +
            "\"post_processor\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"}," +
            "\"model\":{\"type\":\"BPE\",\"vocab\":" + encoder + ",\"merges\":[" + string.Join(',', merges) + "]}}");
        return path;
    }
}
