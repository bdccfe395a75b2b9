using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;
using UioLlm.Training.Data;

namespace UioLlm.Tests.Training;

public sealed class DataTests
{
    // ---- documents ----

    [Fact]
    public void TextFileIsOneDocumentWithCrlfNormalised()
    {
        using var temp = new TempFolder();
        string file = temp.Write("a.txt", "line one\r\nline two\r\n\r\nend\rkeep");
        var docs = DocumentSource.FromPaths(file).ReadAll().ToList();
        var doc = Assert.Single(docs);
        Assert.Equal("line one\nline two\n\nend\rkeep", doc.Text);
        Assert.Equal(file, doc.Source);
        Assert.Equal(0, doc.Line);
    }

    [Fact]
    public void FolderIsReadRecursivelyInPathOrderSkippingOtherFiles()
    {
        using var temp = new TempFolder();
        temp.Write("b.txt", "B");
        temp.Write("sub/deeper/a.txt", "SDA");
        temp.Write("a.txt", "A");
        temp.Write("sub/c.jsonl", "{\"text\": \"C1\"}\n{\"text\": \"C2\"}\n");
        temp.Write("notes.md", "not a document");
        var source = DocumentSource.FromPaths(temp.Path);
        Assert.Equal(4, source.Files.Count);
        Assert.Equal(source.Files.Order(StringComparer.Ordinal), source.Files);
        Assert.Equal(["A", "B", "C1", "C2", "SDA"], source.ReadAll().Select(d => d.Text));
    }

    [Fact]
    public void JsonLinesGiveOneDocumentPerLineAndSkipBlankLines()
    {
        using var temp = new TempFolder();
        string file = temp.Write("d.jsonl", "{\"text\": \"first\\r\\nsecond\", \"id\": 7}\r\n\r\n   \n{\"meta\": {\"x\": 1}, \"text\": \"third\"}");
        var docs = DocumentSource.ReadFile(file).ToList();
        Assert.Equal(2, docs.Count);
        Assert.Equal("first\nsecond", docs[0].Text);
        Assert.Equal(1, docs[0].Line);
        Assert.Equal("third", docs[1].Text);
        Assert.Equal(4, docs[1].Line);
        Assert.Equal($"{file}:4", docs[1].Source);
    }

    [Theory]
    [InlineData("{\"text\": \"ok\"}\n{\"text\": \"broken\"\n", 2, "not valid JSON")]
    [InlineData("{\"text\": \"ok\"}\n\n{\"body\": \"no text\"}\n", 3, "no \"text\" field")]
    [InlineData("{\"text\": 42}\n", 1, "must be a string")]
    [InlineData("{\"text\": \"ok\"}\n[\"text\"]\n", 2, "expected a JSON object")]
    public void JsonLinesErrorsNameFileAndLine(string content, int line, string expected)
    {
        using var temp = new TempFolder();
        string file = temp.Write("bad.jsonl", content);
        var e = Assert.Throws<DataFormatException>(() => DocumentSource.FromPaths(file).ReadAll().ToList());
        Assert.Equal(file, e.FilePath);
        Assert.Equal(line, e.Line);
        Assert.Contains($"{file}, line {line}", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void MissingPathsAndOtherFileKindsAreRejected()
    {
        using var temp = new TempFolder();
        Assert.Throws<FileNotFoundException>(() => DocumentSource.FromPaths(Path.Combine(temp.Path, "absent.txt")));
        string csv = temp.Write("x.csv", "a,b");
        var e = Assert.Throws<DataFormatException>(() => DocumentSource.FromPaths(csv));
        Assert.Contains("x.csv", e.Message);
        Directory.CreateDirectory(Path.Combine(temp.Path, "empty"));
        Assert.Throws<DataFormatException>(() => DocumentSource.FromPaths(Path.Combine(temp.Path, "empty")));
    }

    [DataFact]
    public void GutenbergTextIsKeptWithItsHeaderAndLfLineEnds()
    {
        string file = TestData.File("text", "gutenberg", "pg3261_news_from_nowhere_morris.txt");
        Assert.Contains("\r\n", File.ReadAllText(file));
        var doc = Assert.Single(DocumentSource.ReadFile(file));
        Assert.DoesNotContain("\r\n", doc.Text);
        Assert.Contains("Project Gutenberg", doc.Text[..2000]);
        Assert.Equal(File.ReadAllText(file).Replace("\r\n", "\n"), doc.Text);
    }

    // ---- tokenized corpus and its cache ----

    [Fact]
    public void CorpusTokenizesEachDocumentWithBos()
    {
        using var temp = new TempFolder();
        temp.Write("docs/a.txt", "hello\r\nworld");
        temp.Write("docs/b.jsonl", "{\"text\": \"xy\"}\n{\"text\": \"z\"}\n");
        var corpus = TokenizedCorpus.Build(DocumentSource.FromPaths(Path.Combine(temp.Path, "docs")), new CharTokenizer(), Path.Combine(temp.Path, "cache"));
        var tok = new CharTokenizer();
        Assert.Equal(3, corpus.Documents.Count);
        Assert.Equal(tok.Encode("hello\nworld", addBos: true), corpus.Documents[0].Ids);
        Assert.Equal(tok.Encode("xy", addBos: true), corpus.Documents[1].Ids);
        Assert.Equal(tok.Encode("z", addBos: true), corpus.Documents[2].Ids);
        Assert.EndsWith("b.jsonl:2", corpus.Documents[2].Source);
        Assert.Equal(12 + 3 + 2, corpus.TotalTokens);
    }

    [Fact]
    public void SecondBuildReadsTheCacheInsteadOfTokenizing()
    {
        using var temp = new TempFolder();
        temp.Write("docs/a.txt", "alpha beta");
        temp.Write("docs/b.jsonl", "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n");
        var source = DocumentSource.FromPaths(Path.Combine(temp.Path, "docs"));
        string cache = Path.Combine(temp.Path, "cache");

        var first = new CountingTokenizer(new CharTokenizer());
        var built = TokenizedCorpus.Build(source, first, cache);
        Assert.Equal(3, first.EncodeCalls);
        Assert.Equal((0, 2), (built.CacheHits, built.CacheMisses));
        Assert.Empty(Directory.GetFiles(cache, "*.tmp"));
        Assert.Equal(2, Directory.GetFiles(cache, "*.tok").Length);

        var second = new CountingTokenizer(new CharTokenizer());
        var progress = new List<CorpusProgress>();
        var cached = TokenizedCorpus.Build(source, second, cache, progress.Add);
        Assert.Equal(0, second.EncodeCalls);
        Assert.Equal((2, 0), (cached.CacheHits, cached.CacheMisses));
        Assert.All(progress, p => Assert.True(p.FromCache));
        Assert.Equal(built.Documents.Select(d => d.Source), cached.Documents.Select(d => d.Source));
        for (int i = 0; i < built.Documents.Count; i++) Assert.Equal(built.Documents[i].Ids, cached.Documents[i].Ids);
    }

    [Fact]
    public void ChangedFileOrOtherTokenizerMissesTheCache()
    {
        using var temp = new TempFolder();
        string file = temp.Write("a.txt", "some text");
        string cache = Path.Combine(temp.Path, "cache");
        TokenizedCorpus.Build(DocumentSource.FromPaths(file), new CharTokenizer(), cache);

        File.WriteAllText(file, "some other text");
        var counting = new CountingTokenizer(new CharTokenizer());
        var changed = TokenizedCorpus.Build(DocumentSource.FromPaths(file), counting, cache);
        Assert.Equal(1, counting.EncodeCalls);
        Assert.Equal(new CharTokenizer().Encode("some other text", addBos: true), changed.Documents[0].Ids);

        var other = new CountingTokenizer(new ShiftedTokenizer());
        TokenizedCorpus.Build(DocumentSource.FromPaths(file), other, cache);
        Assert.Equal(1, other.EncodeCalls);
    }

    [Fact]
    public void DamagedCacheEntryIsRebuilt()
    {
        using var temp = new TempFolder();
        string file = temp.Write("a.txt", "abcdefgh");
        string cache = Path.Combine(temp.Path, "cache");
        TokenizedCorpus.Build(DocumentSource.FromPaths(file), new CharTokenizer(), cache);
        string entry = Assert.Single(Directory.GetFiles(cache, "*.tok"));
        File.WriteAllBytes(entry, File.ReadAllBytes(entry)[..^4]);

        var counting = new CountingTokenizer(new CharTokenizer());
        var rebuilt = TokenizedCorpus.Build(DocumentSource.FromPaths(file), counting, cache);
        Assert.Equal(1, counting.EncodeCalls);
        Assert.Equal(9, rebuilt.Documents[0].Ids.Length);
        Assert.Equal(1, TokenizedCorpus.Build(DocumentSource.FromPaths(file), new CharTokenizer(), cache).CacheHits);
    }

    [DataFact]
    public void RealTokenizerCorpusIsCachedIdentically()
    {
        using var temp = new TempFolder();
        var tokenizer = Tokenizer.Load(TestData.File("models", "stories260K", "tok512.bin"));
        string file = temp.Write("story.txt", File.ReadAllText(TestData.File("text", "moby_dick_ch1.txt"))[..4000]);
        string cache = Path.Combine(temp.Path, "cache");
        var first = TokenizedCorpus.Build(DocumentSource.FromPaths(file), tokenizer, cache);
        var counting = new CountingTokenizer(tokenizer);
        var second = TokenizedCorpus.Build(DocumentSource.FromPaths(file), counting, cache);
        Assert.Equal(0, counting.EncodeCalls);
        Assert.Equal(tokenizer.BosId, first.Documents[0].Ids[0]);
        Assert.Equal(tokenizer.Encode(File.ReadAllText(file), addBos: true), second.Documents[0].Ids);
    }

    // ---- examples ----

    private static TokenizedCorpus Corpus(params int[] lengths) =>
        TokenizedCorpus.FromIds(lengths.Select((n, d) => new TokenizedDocument($"doc{d}", Enumerable.Range(1000 * d, n).ToArray())));

    [Fact]
    public void ShortDocumentsAreSkippedAndCounted()
    {
        const int l = 4;
        // 2*l + 1 = 9 tokens is the shortest usable document.
        var examples = new TrainingExamples(Corpus(1, 5, 8, 9, 12), l, maxSegments: 8);
        Assert.Equal(3, examples.SkippedShort);
        Assert.Equal(2, examples.Count);
        Assert.Equal(2, examples[0].Segments);
        Assert.Equal(2, examples[1].Segments);
        Assert.Equal("doc3", examples[0].Source);
    }

    [Theory]
    [InlineData(4, 3, new[] { 9, 40, 101, 13, 200 })]
    [InlineData(5, 2, new[] { 16, 31, 56 })]
    [InlineData(3, 7, new[] { 300, 7, 22 })]
    public void ExamplesHaveExactlyTSegmentsTimesLPlusOneTokensFromTheirDocument(int l, int maxSegments, int[] lengths)
    {
        var corpus = Corpus(lengths);
        var examples = new TrainingExamples(corpus, l, maxSegments);
        Assert.True(examples.Count > 0);
        long segments = 0;
        for (int i = 0; i < examples.Count; i++)
        {
            var e = examples[i];
            Assert.InRange(e.Segments, 2, maxSegments);
            Assert.Equal(e.Segments * l + 1, e.Tokens.Length);
            var document = corpus.Documents.Single(d => d.Source == e.Source).Ids;
            Assert.Equal(document.AsSpan(e.Start, e.Tokens.Length).ToArray(), e.Tokens.ToArray());
            segments += e.Segments;
        }
        Assert.Equal(segments, examples.TotalSegments);
        // Every whole segment of every usable document is used once, apart from dropped single pieces.
        long usable = lengths.Select(n => (n - 1) / l).Where(s => s >= 2).Sum(s => (long)s);
        Assert.Equal(usable, segments + examples.DroppedSegments);
    }

    [Fact]
    public void LongDocumentsAreCutIntoNearlyEqualConsecutiveExamples()
    {
        // 23 segments of 4 tokens (plus target), at most 5 per example: 5 examples of 5, 5, 5, 4, 4.
        var examples = new TrainingExamples(Corpus(23 * 4 + 3), segmentLength: 4, maxSegments: 5);
        Assert.Equal([5, 5, 5, 4, 4], Enumerable.Range(0, examples.Count).Select(i => examples[i].Segments));
        Assert.Equal([0, 20, 40, 60, 76], Enumerable.Range(0, examples.Count).Select(i => examples[i].Start));
        Assert.Equal(0, examples.DroppedSegments);
    }

    // ---- shuffling ----

    private static List<int> Draw(ShuffledExamples stream, int n) => Enumerable.Range(0, n).Select(_ => stream.Next().Index).ToList();

    [Fact]
    public void ShufflingIsDeterministicPerSeedAndEachEpochIsAPermutation()
    {
        var examples = new TrainingExamples(Corpus(Enumerable.Repeat(41, 30).ToArray()), 4, 10);
        Assert.Equal(30, examples.Count);
        var a = Draw(new ShuffledExamples(examples, seed: 7), 90);
        var b = Draw(new ShuffledExamples(examples, seed: 7), 90);
        var c = Draw(new ShuffledExamples(examples, seed: 8), 90);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        for (int epoch = 0; epoch < 3; epoch++)
            Assert.Equal(Enumerable.Range(0, 30), a.Skip(30 * epoch).Take(30).Order());
        Assert.NotEqual(a.Take(30), a.Skip(30).Take(30));
        Assert.NotEqual(Enumerable.Range(0, 30), a.Take(30));
    }

    [Fact]
    public void AShuffledStreamFeedsTheTrainerAndResumesFromItsPosition()
    {
        var examples = new TrainingExamples(Corpus(Enumerable.Repeat(41, 30).ToArray()), 4, 10);
        UioLlm.Training.ITrainingData data = new ShuffledExamples(examples, seed: 5);
        for (int i = 0; i < 37; i++) Assert.Equal(examples[0].Tokens.Length, data.Next().Length);
        var saved = data.Position;
        Assert.Equal(new UioLlm.Training.TrainingDataPosition(1, 7), saved);
        var expected = Enumerable.Range(0, 10).Select(_ => data.Next()).ToList();
        UioLlm.Training.ITrainingData resumed = new ShuffledExamples(examples, seed: 5);
        resumed.Position = saved;
        Assert.Equal(expected, Enumerable.Range(0, 10).Select(_ => resumed.Next()).ToList());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(11)]
    [InlineData(30)]
    [InlineData(47)]
    public void RestoredPositionContinuesWithExactlyTheNextExample(int consumed)
    {
        var examples = new TrainingExamples(Corpus(Enumerable.Repeat(41, 30).ToArray()), 4, 10);
        var original = new ShuffledExamples(examples, seed: 3);
        Draw(original, consumed);
        var saved = original.Position;
        var expected = Draw(original, 40);

        var resumed = new ShuffledExamples(examples, seed: 3);
        Draw(resumed, 5);
        resumed.Restore(saved);
        Assert.Equal(saved, resumed.Position);
        Assert.Equal(expected, Draw(resumed, 40));
    }

    [Fact]
    public void PositionOfAnotherStreamIsRejected()
    {
        var examples = new TrainingExamples(Corpus(Enumerable.Repeat(41, 30).ToArray()), 4, 10);
        var stream = new ShuffledExamples(examples, seed: 3);
        var e = Assert.Throws<ArgumentException>(() => stream.Restore(new ShuffledExamples(examples, seed: 4).Position));
        Assert.Contains("seed 4", e.Message);
        Assert.Throws<ArgumentException>(() => stream.Restore(new ExamplePosition(3, 30, 0, 31)));
        Assert.Throws<ArgumentException>(() => new ShuffledExamples(new TrainingExamples(Corpus(3), 4, 10), 1));
    }

    /// <summary>Same vocabulary size as <see cref="CharTokenizer"/> but other pieces: a different identity.</summary>
    private sealed class ShiftedTokenizer : ITokenizer
    {
        private readonly CharTokenizer inner = new();
        public int VocabSize => inner.VocabSize;
        public int BosId => inner.BosId;
        public int EosId => inner.EosId;
        public int[] Encode(string text, bool addBos = false, bool addEos = false) =>
            inner.Encode(text, addBos, addEos).Select(id => id < 256 ? (id + 1) % 256 : id).ToArray();
        public string Decode(ReadOnlySpan<int> ids) => inner.Decode(ids);
        public string TokenText(int id) => id < 256 ? inner.TokenText((id + 255) % 256) : inner.TokenText(id);
        public TokenStream NewStream() => inner.NewStream();
    }
}
