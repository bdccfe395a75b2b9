using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// SentencePiece BPE (the Llama / Llama-2 / Mistral tokenizer family) without the native library: identity
/// normalization with the dummy-prefix space, spaces escaped as U+2581, user-defined pieces matched whole,
/// merges by highest piece score (leftmost first on ties), byte fallback to &lt;0xNN&gt; pieces.
/// </summary>
/// <remarks>
/// Encoding is exact with respect to sentencepiece's whole-text algorithm but runs word by word: when no mergeable
/// piece contains a non-U+2581 character followed by U+2581 (checked on load; true for Llama-2), no merge can
/// cross the point before a U+2581 that follows another character, so the text is cut there and each word's ids
/// are cached. Vocabularies without that property, or with UNUSED pieces (whose re-splitting sentencepiece
/// resolves over the whole text), are encoded whole.
/// </remarks>
public sealed class SentencePieceTokenizer : ITokenizer, ITokenBytes
{
    private const char SpaceSymbol = '\u2581';
    private static readonly UTF8Encoding Utf8 = new(false, false);

    private readonly SentencePieceVocab vocab;
    private readonly Dictionary<string, int> mergeable = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> mergeableBySpan;
    private readonly int[] byteIds = new int[256];
    private readonly UserDefinedMatcher? userDefined;
    private readonly bool hasUnused;
    private readonly WordCache? wordCache;
    private readonly byte[][] decodeBytes, decodeBytesAtStart;

    [ThreadStatic] private static BpeWorkspace? workspace;

    internal SentencePieceTokenizer(SentencePieceVocab vocab)
    {
        this.vocab = vocab;
        mergeableBySpan = mergeable.GetAlternateLookup<ReadOnlySpan<char>>();
        Array.Fill(byteIds, -1);
        var userPieces = new List<(string, int)>();
        for (int id = 0; id < vocab.Pieces.Length; id++)
        {
            string piece = vocab.Pieces[id];
            switch (vocab.Types[id])
            {
                case SentencePieceType.Normal or SentencePieceType.UserDefined or SentencePieceType.Unused:
                    mergeable.TryAdd(piece, id);
                    if (vocab.Types[id] == SentencePieceType.UserDefined && piece.Length > 0) userPieces.Add((piece, id));
                    if (vocab.Types[id] == SentencePieceType.Unused) hasUnused = true;
                    break;
                case SentencePieceType.Byte:
                    if (!SentencePieceVocab.TryParseBytePiece(piece, out byte b))
                        throw new ModelFormatException(vocab.Source, $"piece {id} has type BYTE but text '{piece}', expected <0xNN>");
                    if (byteIds[b] < 0) byteIds[b] = id;
                    break;
            }
        }
        if (userPieces.Count > 0) userDefined = new UserDefinedMatcher(userPieces);
        if (!hasUnused && MergesNeverCrossWordStarts()) wordCache = new WordCache();
        (decodeBytes, decodeBytesAtStart) = BuildDecodeTable();
    }

    /// <summary>Loads a SentencePiece tokenizer.model (BPE model type).</summary>
    public static SentencePieceTokenizer FromModelFile(string path) => new(SentencePieceModelReader.Read(path));

    /// <summary>Loads a llama2.c tokenizer.bin.</summary>
    public static SentencePieceTokenizer FromLlama2cFile(string path) => new(Llama2cTokenizerReader.Read(path));

    /// <inheritdoc/>
    public int VocabSize => vocab.Pieces.Length;
    /// <inheritdoc/>
    public int BosId => vocab.BosId;
    /// <inheritdoc/>
    public int EosId => vocab.EosId;
    /// <summary>The unknown id, or -1.</summary>
    public int UnkId => vocab.UnkId;
    /// <summary>True when the text is encoded word by word with a cache (see the remarks on the class).</summary>
    public bool UsesWordSplitting => wordCache is not null;

    /// <summary>The merge score of a piece (higher merges first).</summary>
    public float Score(int id) { TokenBytes.CheckId(id, VocabSize); return vocab.Scores[id]; }

    /// <summary>The kind of a piece.</summary>
    public SentencePieceType PieceType(int id) { TokenBytes.CheckId(id, VocabSize); return vocab.Types[id]; }

    /// <inheritdoc/>
    public string TokenText(int id) { TokenBytes.CheckId(id, VocabSize); return vocab.Pieces[id]; }

    /// <summary>
    /// The text the merges run on: extra spaces removed if the model asks for it, the dummy-prefix space added
    /// (for non-empty text), spaces escaped as U+2581.
    /// </summary>
    public string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        ReadOnlySpan<char> body = text;
        var sb = new StringBuilder(text.Length + 1);
        if (vocab.RemoveExtraWhitespaces)
        {
            body = body.Trim(' ');
            for (int i = 0; i < body.Length; i++)
                if (body[i] != ' ' || body[i - 1] != ' ') sb.Append(body[i]);
        }
        else sb.Append(body);
        if (sb.Length == 0) return string.Empty;
        if (vocab.AddDummyPrefix) sb.Insert(0, ' ');
        if (vocab.EscapeWhitespaces) sb.Replace(' ', SpaceSymbol);
        return sb.ToString();
    }

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        string normalized = Normalize(text);
        var ids = new List<int>(normalized.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        int first = ids.Count;
        EncodeNormalized(normalized, ids);
        if (!vocab.ByteFallback && vocab.UnkId >= 0) CollapseUnknownRuns(ids, first);
        if (addEos && EosId >= 0) ids.Add(EosId);
        return ids.ToArray();
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids) => TokenBytes.Decode(this, ids);

    /// <inheritdoc/>
    public TokenStream NewStream() => new(this);

    void ITokenBytes.AppendBytes(int id, ref bool atStart, ArrayBufferWriter<byte> output)
    {
        if (vocab.Types[id] == SentencePieceType.Control) return; // invisible, and does not end the start of text
        output.Write(atStart ? decodeBytesAtStart[id] : decodeBytes[id]);
        atStart = false;
    }

    /// <summary>Cuts the normalized text at user-defined pieces and encodes the runs between them.</summary>
    private void EncodeNormalized(string text, List<int> ids)
    {
        int runStart = 0, i = 0;
        while (i < text.Length)
        {
            if (userDefined is not null && userDefined.TryMatch(text, i, out int length, out int id))
            {
                EncodeRun(text.AsSpan(runStart, i - runStart), ids);
                ids.Add(id);
                i += length;
                runStart = i;
            }
            else i += char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
        }
        EncodeRun(text.AsSpan(runStart), ids);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void EncodeRun(ReadOnlySpan<char> run, List<int> ids)
    {
        if (run.IsEmpty) return;
        if (wordCache is null) { Merge(run, ids); return; }
        int wordStart = 0;
        for (int i = 1; i <= run.Length; i++)
        {
            // A word ends before a U+2581 that follows another character (and at the end of the run).
            if (i < run.Length && !(run[i] == SpaceSymbol && run[i - 1] != SpaceSymbol)) continue;
            var word = run[wordStart..i];
            if (!wordCache.TryGet(word, out int[] wordIds))
            {
                var list = new List<int>(word.Length);
                Merge(word, list);
                wordIds = list.ToArray();
                wordCache.Add(word, wordIds);
            }
            ids.AddRange(wordIds);
            wordStart = i;
        }
    }

    /// <summary>
    /// BPE over one run: start from code points, repeatedly merge the adjacent pair whose concatenation is the
    /// highest-scoring mergeable piece (leftmost on ties), then map the final symbols to ids.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: skip the slow first JIT tier
    private void Merge(ReadOnlySpan<char> text, List<int> ids)
    {
        var ws = workspace ??= new BpeWorkspace();
        int count = ws.Reset(text);
        if (count == 0) return;
        for (int k = 0; k + 1 < count; k++) TryQueuePair(ws, text, k, k + 1);
        Dictionary<string, (string, string)>? revMerge = hasUnused ? new(StringComparer.Ordinal) : null;

        while (ws.Queue.TryDequeue(out var pair, out _))
        {
            int l = pair.Left, r = pair.Right;
            if (ws.Length[l] == 0 || ws.Next[l] != r || ws.Length[l] + ws.Length[r] != pair.Size) continue; // stale
            if (revMerge is not null && vocab.Types[pair.Id] == SentencePieceType.Unused)
                revMerge[text.Slice(ws.Start[l], pair.Size).ToString()] =
                    (text.Slice(ws.Start[l], ws.Length[l]).ToString(), text.Slice(ws.Start[r], ws.Length[r]).ToString());
            ws.MergeWithNext(l);
            if (ws.Prev[l] >= 0) TryQueuePair(ws, text, ws.Prev[l], l);
            if (ws.Next[l] >= 0) TryQueuePair(ws, text, l, ws.Next[l]);
        }

        for (int k = 0; k >= 0; k = ws.Next[k])
            EmitPiece(text.Slice(ws.Start[k], ws.Length[k]), ids, revMerge);
    }

    private void TryQueuePair(BpeWorkspace ws, ReadOnlySpan<char> text, int left, int right)
    {
        int size = ws.Length[left] + ws.Length[right];
        if (mergeableBySpan.TryGetValue(text.Slice(ws.Start[left], size), out int id))
            ws.Queue.Enqueue(new BpePair(left, right, size, id), new BpePriority(vocab.Scores[id], left));
    }

    /// <summary>One final symbol: its piece id, its re-split parts if it is UNUSED, or its bytes / unk.</summary>
    private void EmitPiece(ReadOnlySpan<char> piece, List<int> ids, Dictionary<string, (string, string)>? revMerge)
    {
        if (mergeableBySpan.TryGetValue(piece, out int id))
        {
            if (revMerge is not null && vocab.Types[id] == SentencePieceType.Unused
                && revMerge.TryGetValue(piece.ToString(), out var parts))
            {
                EmitPiece(parts.Item1, ids, revMerge);
                EmitPiece(parts.Item2, ids, revMerge);
            }
            else ids.Add(id);
            return;
        }
        if (!vocab.ByteFallback) { AddUnknown(ids, piece); return; }
        Span<byte> bytes = stackalloc byte[Utf8.GetMaxByteCount(piece.Length)];
        int n = Utf8.GetBytes(piece, bytes);
        foreach (byte b in bytes[..n])
        {
            if (byteIds[b] >= 0) ids.Add(byteIds[b]);
            else AddUnknown(ids, piece);
        }
    }

    private void AddUnknown(List<int> ids, ReadOnlySpan<char> piece)
    {
        if (vocab.UnkId < 0)
            throw new ArgumentException($"'{piece}' has no token and the vocabulary of {vocab.Source} has no unknown piece");
        ids.Add(vocab.UnkId);
    }

    /// <summary>sentencepiece merges a run of consecutive unknown pieces into one.</summary>
    private void CollapseUnknownRuns(List<int> ids, int from)
    {
        int write = from;
        for (int read = from; read < ids.Count; read++)
        {
            if (ids[read] == vocab.UnkId && write > from && ids[write - 1] == vocab.UnkId) continue;
            ids[write++] = ids[read];
        }
        ids.RemoveRange(write, ids.Count - write);
    }

    /// <summary>True when no mergeable piece has U+2581 after another character (so merges never cross a word start).</summary>
    private bool MergesNeverCrossWordStarts()
    {
        foreach (string piece in mergeable.Keys)
            for (int j = 1; j < piece.Length; j++)
                if (piece[j] == SpaceSymbol && piece[j - 1] != SpaceSymbol) return false;
        return true;
    }

    /// <summary>Per id, the UTF-8 bytes it decodes to, and the same at the start of the text (dummy-prefix space dropped).</summary>
    private (byte[][] Normal, byte[][] AtStart) BuildDecodeTable()
    {
        int n = vocab.Pieces.Length;
        var normal = new byte[n][];
        var atStart = new byte[n][];
        bool dropLeadingSpace = vocab.AddDummyPrefix || vocab.RemoveExtraWhitespaces;
        for (int id = 0; id < n; id++)
        {
            string piece = vocab.Pieces[id];
            switch (vocab.Types[id])
            {
                case SentencePieceType.Control:
                    normal[id] = atStart[id] = [];
                    break;
                case SentencePieceType.Unknown:
                    normal[id] = atStart[id] = Utf8.GetBytes(vocab.UnkSurface);
                    break;
                case SentencePieceType.Byte:
                    SentencePieceVocab.TryParseBytePiece(piece, out byte b);
                    normal[id] = atStart[id] = [b];
                    break;
                default:
                    string text = piece.Replace(SpaceSymbol, ' ');
                    normal[id] = Utf8.GetBytes(text);
                    atStart[id] = dropLeadingSpace && piece.Length > 0 && piece[0] == SpaceSymbol
                        ? Utf8.GetBytes(text[1..]) : normal[id];
                    break;
            }
        }
        return (normal, atStart);
    }

    /// <summary>Longest-match lookup of user-defined pieces, indexed by first character.</summary>
    private sealed class UserDefinedMatcher
    {
        private readonly Dictionary<char, (string Piece, int Id)[]> byFirstChar;

        public UserDefinedMatcher(List<(string Piece, int Id)> pieces)
        {
            byFirstChar = pieces.GroupBy(p => p.Piece[0])
                .ToDictionary(g => g.Key, g => g.OrderByDescending(p => p.Piece.Length).ToArray());
        }

        public bool TryMatch(string text, int at, out int length, out int id)
        {
            if (byFirstChar.TryGetValue(text[at], out var candidates))
                foreach (var (piece, pieceId) in candidates)
                    if (text.AsSpan(at).StartsWith(piece, StringComparison.Ordinal))
                    {
                        length = piece.Length;
                        id = pieceId;
                        return true;
                    }
            length = 0;
            id = -1;
            return false;
        }
    }
}
