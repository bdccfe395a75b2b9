using UioLlm.Model.Tokenizers;

namespace UioLlm.Training.Data;

/// <summary>One document's token ids (BOS first where the vocabulary has one).</summary>
/// <param name="Source">The file the document came from (":line" for JSON lines).</param>
/// <param name="Ids">Its token ids.</param>
public sealed record TokenizedDocument(string Source, int[] Ids);

/// <summary>Progress of <see cref="TokenizedCorpus.Build"/>, reported once per source file.</summary>
/// <param name="FilesDone">Files finished so far.</param>
/// <param name="FilesTotal">Files in the source.</param>
/// <param name="Tokens">Tokens gathered so far.</param>
/// <param name="File">The file just finished.</param>
/// <param name="FromCache">Whether its ids came from the cache.</param>
public readonly record struct CorpusProgress(int FilesDone, int FilesTotal, long Tokens, string File, bool FromCache);

/// <summary>
/// Every document of a <see cref="DocumentSource"/> as token ids. Each file is tokenized once (BOS at the
/// start of each document) and its ids cached in a folder the caller names; a later build with the same
/// file (path, length, write time) and tokenizer reads the cache instead of tokenizing again.
/// </summary>
public sealed class TokenizedCorpus
{
    private TokenizedCorpus(IReadOnlyList<TokenizedDocument> documents, int cacheHits, int cacheMisses)
    {
        Documents = documents;
        CacheHits = cacheHits;
        CacheMisses = cacheMisses;
        TotalTokens = documents.Sum(d => (long)d.Ids.Length);
    }

    /// <summary>The documents, in source order.</summary>
    public IReadOnlyList<TokenizedDocument> Documents { get; }

    /// <summary>Files whose ids were read from the cache.</summary>
    public int CacheHits { get; }

    /// <summary>Files that were tokenized (and then cached).</summary>
    public int CacheMisses { get; }

    /// <summary>Sum of the documents' lengths in tokens.</summary>
    public long TotalTokens { get; }

    /// <summary>Tokenizes (or reads from <paramref name="cacheFolder"/>) every document of <paramref name="source"/>.</summary>
    /// <param name="source">The documents.</param>
    /// <param name="tokenizer">The tokenizer; its identity is part of the cache key.</param>
    /// <param name="cacheFolder">Folder for the cached ids (created if missing).</param>
    /// <param name="progress">Called after each file.</param>
    public static TokenizedCorpus Build(DocumentSource source, ITokenizer tokenizer, string cacheFolder, Action<CorpusProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var cache = new TokenCache(cacheFolder, TokenizerIdentity.Of(tokenizer));
        var documents = new List<TokenizedDocument>();
        int hits = 0, misses = 0;
        long tokens = 0;
        for (int f = 0; f < source.Files.Count; f++)
        {
            string file = source.Files[f];
            byte[] key = cache.KeyOf(file);
            var cached = cache.TryRead(key, tokenizer.VocabSize);
            bool fromCache = cached is not null;
            if (cached is null)
            {
                cached = DocumentSource.ReadFile(file).Select(d => new CachedDocument(d.Line, tokenizer.Encode(d.Text, addBos: true))).ToArray();
                cache.Write(key, cached);
                misses++;
            }
            else hits++;
            foreach (var document in cached)
            {
                documents.Add(new TokenizedDocument(Document.SourceName(file, document.Line), document.Ids));
                tokens += document.Ids.Length;
            }
            progress?.Invoke(new CorpusProgress(f + 1, source.Files.Count, tokens, file, fromCache));
        }
        return new TokenizedCorpus(documents, hits, misses);
    }

    /// <summary>A corpus of ids already in memory (synthetic data, tests).</summary>
    public static TokenizedCorpus FromIds(IEnumerable<TokenizedDocument> documents)
    {
        ArgumentNullException.ThrowIfNull(documents);
        return new TokenizedCorpus([.. documents], 0, 0);
    }
}
