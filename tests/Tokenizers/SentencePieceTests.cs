using System.Text;
using System.Text.Json;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Tokenizers.TokenizerFixtures;

namespace UioLlm.Tests.Tokenizers;

public class SentencePieceTests
{
    [DataTheory]
    [InlineData("model")]
    [InlineData("bin")]
    [InlineData("gguf")]
    public void Llama2cVectorsMatch(string source)
    {
        var tokenizer = Llama(source);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.File("tokenizers", "llama2", "llama2c_vectors.json")));
        var cases = doc.RootElement.GetProperty("cases").EnumerateArray().ToList();
        Assert.Equal(5, cases.Count);
        foreach (var c in cases)
        {
            string text = c.GetProperty("text").GetString()!;
            int[] expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            SameIds(expected, tokenizer.Encode(text, addBos: true), $"{source}: '{text}'");
        }
    }

    [DataTheory]
    [InlineData("model")]
    [InlineData("bin")]
    [InlineData("gguf")]
    public void LlamaCppVocabVectorsMatch(string source)
    {
        var tokenizer = Llama(source);
        var cases = GgmlVectors("llama2", "ggml-vocab-llama-spm.gguf");
        Assert.True(cases.Count >= 40, $"only {cases.Count} cases read");
        foreach (var (text, ids) in cases)
            SameIds(ids, tokenizer.Encode(text), $"{source}: '{text}'");
    }

    [DataTheory]
    [InlineData("model")]
    [InlineData("gguf")]
    public void MobyDickChapterOneMatches(string source)
    {
        int[] expected = JsonIds("tokenizers", "llama2", "moby_dick_ch1.llama2.json");
        Assert.Equal(1, expected[0]); // the file's ids start with BOS
        SameIds(expected, Llama(source).Encode(Text("moby_dick_ch1.txt"), addBos: true), "moby_dick_ch1");
    }

    [DataFact]
    public void ModelFileMetadataIsRead()
    {
        var t = LlamaModel;
        Assert.Equal(32000, t.VocabSize);
        Assert.Equal((0, 1, 2), (t.UnkId, t.BosId, t.EosId));
        Assert.Equal(SentencePieceType.Unknown, t.PieceType(0));
        Assert.Equal(SentencePieceType.Control, t.PieceType(1));
        Assert.Equal(SentencePieceType.Byte, t.PieceType(3));
        Assert.Equal("<0x0A>", t.TokenText(13));
        Assert.Equal("\u2581\u2581", t.TokenText(259));
        Assert.True(t.UsesWordSplitting);
        Assert.Equal([1, 2], t.Encode("", addBos: true, addEos: true));
    }

    [DataTheory]
    [InlineData("model")]
    [InlineData("gguf")]
    public void DecodeInvertsEncodeOnRandomText(string source)
    {
        var tokenizer = Llama(source);
        var rng = new Random(11);
        for (int trial = 0; trial < 300; trial++)
        {
            // The documented normalisation: U+2581 in the input decodes as a space; nothing else changes.
            string text = RandomText(rng, rng.Next(0, 30));
            int[] ids = tokenizer.Encode(text, addBos: true, addEos: true);
            Assert.Equal(text, tokenizer.Decode(ids));
            Assert.Equal(text, Stream(tokenizer, ids));
        }
        Assert.Equal("a b", tokenizer.Decode(tokenizer.Encode("a\u2581b")));
    }

    [DataFact]
    public void DecodeDropsOnlyTheDummyPrefixSpace()
    {
        var t = LlamaModel;
        int hello = 15043; // "▁Hello"
        Assert.Equal("Hello", t.Decode([hello]));
        Assert.Equal("Hello", t.Decode([1, hello]));                // BOS does not end the start of text
        Assert.Equal("Hello Hello", t.Decode([hello, hello]));
        Assert.Equal(" Hello", t.Decode([29871, hello]));           // "▁" then "▁Hello": only the first space is dropped
        Assert.Equal("\n Hello", t.Decode([13, hello]));            // a byte token ends the start: no drop afterwards
        Assert.Equal("", t.Decode([1, 2]));
        Assert.Equal(" \u2047 ", t.Decode([0]));                   // sentencepiece's unknown surface
    }

    [DataFact]
    public void StreamingHoldsBackPartialUtf8AndEqualsDecodeOnRandomIds()
    {
        var t = LlamaModel;
        // "🦙" is four byte tokens: nothing comes out until the last one.
        var stream = t.NewStream();
        Assert.Equal("", stream.Push(1));
        Assert.Equal("", stream.Push(243));
        Assert.Equal("", stream.Push(162));
        Assert.Equal("", stream.Push(169));
        Assert.Equal("🦙", stream.Push(156));
        Assert.Equal("", stream.Flush());
        Assert.Equal("\uFFFD", Stream(t, [243, 162]));              // an incomplete character at the end

        var rng = new Random(5);
        for (int trial = 0; trial < 200; trial++)
        {
            // Random ids, biased towards byte tokens so that characters are split and invalid sequences occur.
            int[] ids = Enumerable.Range(0, rng.Next(0, 40))
                .Select(_ => rng.Next(4) == 0 ? rng.Next(t.VocabSize) : rng.Next(3, 259)).ToArray();
            Assert.Equal(t.Decode(ids), Stream(t, ids));
        }
    }

    [DataTheory]
    [InlineData("model")]
    [InlineData("gguf")]
    public void WordSplittingEqualsWholeTextReference(string source)
    {
        var tokenizer = (SentencePieceTokenizer)Llama(source);
        var reference = new ReferenceSentencePiece(tokenizer);
        var rng = new Random(23);
        for (int trial = 0; trial < 150; trial++)
        {
            string text = RandomText(rng, rng.Next(1, 25));
            SameIds(reference.Encode(text), tokenizer.Encode(text), $"'{text}'");
        }
    }

    [DataFact]
    public void StoriesTokenizerLoadsAndRoundTrips()
    {
        var t = SentencePieceTokenizer.FromLlama2cFile(TestData.File("models", "stories260K", "tok512.bin"));
        Assert.Equal(512, t.VocabSize);
        string text = "Once upon a time, there was a little girl named Lily. 日本";
        int[] ids = t.Encode(text, addBos: true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(text, t.Decode(ids));
    }

    [DataFact]
    public void IdsOutsideTheVocabularyAreRejected()
    {
        var t = LlamaModel;
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([32000]));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([-1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.NewStream().Push(32000));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.TokenText(-1));
    }

    /// <summary>
    /// The plain algorithm, straight from its definition: normalize, start from code points, repeatedly merge
    /// the best-scoring adjacent pair over the whole text (leftmost on ties), then byte-fall back.
    /// </summary>
    private sealed class ReferenceSentencePiece
    {
        private readonly SentencePieceTokenizer tokenizer;
        private readonly Dictionary<string, int> pieces = new();
        private readonly Dictionary<string, int> all = new();

        public ReferenceSentencePiece(SentencePieceTokenizer tokenizer)
        {
            this.tokenizer = tokenizer;
            for (int id = 0; id < tokenizer.VocabSize; id++)
            {
                all.TryAdd(tokenizer.TokenText(id), id);
                if (tokenizer.PieceType(id) is SentencePieceType.Normal or SentencePieceType.UserDefined)
                    pieces.TryAdd(tokenizer.TokenText(id), id);
            }
        }

        public int[] Encode(string text)
        {
            string normalized = tokenizer.Normalize(text);
            var symbols = new List<string>();
            for (int i = 0; i < normalized.Length; i += char.IsSurrogatePair(normalized, i) ? 2 : 1)
                symbols.Add(normalized.Substring(i, char.IsSurrogatePair(normalized, i) ? 2 : 1));
            while (true)
            {
                int best = -1;
                float bestScore = float.NegativeInfinity;
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (pieces.TryGetValue(symbols[i] + symbols[i + 1], out int id) && tokenizer.Score(id) > bestScore)
                    {
                        best = i;
                        bestScore = tokenizer.Score(id);
                    }
                if (best < 0) break;
                symbols[best] += symbols[best + 1];
                symbols.RemoveAt(best + 1);
            }
            var ids = new List<int>();
            foreach (string s in symbols)
            {
                if (pieces.TryGetValue(s, out int id)) ids.Add(id);
                else foreach (byte b in Encoding.UTF8.GetBytes(s)) ids.Add(all[$"<0x{b:X2}>"]);
            }
            return ids.ToArray();
        }
    }
}
