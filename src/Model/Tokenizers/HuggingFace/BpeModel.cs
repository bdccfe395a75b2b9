using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;

namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>
/// The BPE model of tokenizer.json: each pre-token is cut into characters (or, after a ByteLevel pre-tokenizer,
/// into its UTF-8 bytes in the byte-level alphabet), looked up with continuing_subword_prefix / end_of_word_suffix,
/// byte fallback (&lt;0xNN&gt;) or the unknown token (fused when fuse_unk), then merged lowest rank first, leftmost
/// on ties. ignore_merges takes a pre-token that is itself in the vocabulary whole.
/// </summary>
internal sealed class BpeModel
{
    private static readonly UTF8Encoding Utf8 = new(false, false);

    private readonly Dictionary<string, int> vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> vocabBySpan;
    private readonly Dictionary<long, (int Rank, int Id)> merges;
    private readonly int[] byteLevelIds = new int[256];
    private readonly int[] byteFallbackIds = new int[256];
    private readonly bool byteLevel, byteFallback, fuseUnk, ignoreMerges;
    private readonly int unkId;
    private readonly string prefix, suffix;

    [ThreadStatic] private static BpeWorkspace? workspace;

    public BpeModel(Dictionary<string, int> vocab, Dictionary<long, (int, int)> merges, bool byteLevel, bool byteFallback,
        int unkId, bool fuseUnk, bool ignoreMerges, string prefix, string suffix, string source)
    {
        this.vocab = vocab;
        vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        this.merges = merges;
        this.byteLevel = byteLevel;
        this.byteFallback = byteFallback;
        this.unkId = unkId;
        this.fuseUnk = fuseUnk;
        this.ignoreMerges = ignoreMerges;
        this.prefix = prefix;
        this.suffix = suffix;
        Array.Fill(byteFallbackIds, -1);
        for (int b = 0; b < 256; b++)
        {
            if (vocab.TryGetValue($"<0x{b:X2}>", out int id)) byteFallbackIds[b] = id;
            if (byteLevel)
            {
                string ch = ByteLevelAlphabet.ToChar((byte)b).ToString();
                if (prefix.Length == 0 && suffix.Length == 0 && !vocab.TryGetValue(ch, out byteLevelIds[b]))
                    throw new ModelFormatException(source, $"model.vocab has no token for byte 0x{b:X2} ('{ch}'); a ByteLevel pre-tokenizer needs all 256");
            }
        }
    }

    /// <summary>True when the pre-tokens are byte-level (the model maps their UTF-8 bytes to the byte alphabet).</summary>
    public bool ByteLevel => byteLevel;

    /// <summary>Appends the ids of one pre-token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Encode(ReadOnlySpan<char> piece, List<int> output)
    {
        if (piece.Length == 0) return;
        if (byteLevel && prefix.Length == 0 && suffix.Length == 0) { EncodeBytes(piece, output); return; }
        string text = byteLevel ? ToByteLevel(piece) : piece.ToString();
        if (ignoreMerges && vocab.TryGetValue(text, out int whole)) { output.Add(whole); return; }
        EncodeChars(text, output);
    }

    /// <summary>Byte-level BPE straight from the UTF-8 bytes (no affixes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void EncodeBytes(ReadOnlySpan<char> piece, List<int> output)
    {
        byte[] rented = ArrayPool<byte>.Shared.Rent(Utf8.GetMaxByteCount(piece.Length));
        try
        {
            int n = Utf8.GetBytes(piece, rented);
            var bytes = rented.AsSpan(0, n);
            if (ignoreMerges && TryWhole(bytes, out int whole)) { output.Add(whole); return; }
            var ws = workspace ??= new BpeWorkspace();
            ws.Queue.Clear();
            ws.EnsureCapacity(n);
            for (int k = 0; k < n; k++)
            {
                ws.Add(k, k, 1);
                ws.Token[k] = byteLevelIds[bytes[k]];
            }
            ws.Next[n - 1] = -1;
            MergeAll(ws, 0, output);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private bool TryWhole(ReadOnlySpan<byte> bytes, out int id)
    {
        Span<char> chars = bytes.Length <= 256 ? stackalloc char[bytes.Length] : new char[bytes.Length];
        for (int k = 0; k < bytes.Length; k++) chars[k] = ByteLevelAlphabet.ToChar(bytes[k]);
        return vocabBySpan.TryGetValue(chars, out id);
    }

    private static string ToByteLevel(ReadOnlySpan<char> piece)
    {
        byte[] bytes = Utf8.GetBytes(piece.ToArray());
        var chars = new char[bytes.Length];
        for (int k = 0; k < bytes.Length; k++) chars[k] = ByteLevelAlphabet.ToChar(bytes[k]);
        return new string(chars);
    }

    /// <summary>Character-level BPE: one symbol per code point, with affixes, byte fallback and the unknown token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void EncodeChars(string text, List<int> output)
    {
        var ws = workspace ??= new BpeWorkspace();
        ws.Queue.Clear();
        ws.EnsureCapacity(text.Length * (4 + Utf8.GetByteCount(prefix) + Utf8.GetByteCount(suffix)) + 4); // room for byte fallback; AddSymbol never grows it
        int count = 0;
        int pendingUnk = 0; // characters waiting to become one (fused) unknown token
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < text.Length;)
        {
            int width = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            bool first = i == 0, last = i + width == text.Length;
            var ch = text.AsSpan(i, width);
            int id = Lookup(ch, first, last);
            if (id >= 0)
            {
                FlushUnk(ws, ref count, ref pendingUnk);
                AddSymbol(ws, ref count, id);
            }
            else
            {
                bool done = false;
                if (byteFallback)
                {
                    string s = (first ? "" : prefix) + ch.ToString() + (last ? suffix : "");
                    byte[] sBytes = Utf8.GetBytes(s);
                    bool all = true;
                    foreach (byte b in sBytes) all &= byteFallbackIds[b] >= 0;
                    if (all)
                    {
                        // As Hugging Face does, a pending unknown is not flushed before the fallback bytes.
                        foreach (byte b in sBytes) AddSymbol(ws, ref count, byteFallbackIds[b]);
                        done = true;
                    }
                }
                if (!done && unkId >= 0)
                {
                    if (pendingUnk > 0 && !fuseUnk) FlushUnk(ws, ref count, ref pendingUnk);
                    pendingUnk++;
                }
                // No unknown token and no fallback: the character is dropped, as Hugging Face drops it.
            }
            i += width;
        }
        FlushUnk(ws, ref count, ref pendingUnk);
        if (count == 0) return;
        for (int k = 0; k < count; k++) { ws.Prev[k] = k - 1; ws.Next[k] = k + 1; ws.Length[k] = 1; ws.Start[k] = k; }
        ws.Next[count - 1] = -1;
        MergeAll(ws, 0, output);
    }

    private void FlushUnk(BpeWorkspace ws, ref int count, ref int pendingUnk)
    {
        if (pendingUnk == 0) return;
        AddSymbol(ws, ref count, unkId);
        pendingUnk = 0;
    }

    private static void AddSymbol(BpeWorkspace ws, ref int count, int id) => ws.Token[count++] = id;

    private int Lookup(ReadOnlySpan<char> ch, bool first, bool last)
    {
        if ((first || prefix.Length == 0) && (!last || suffix.Length == 0))
            return vocabBySpan.TryGetValue(ch, out int id) ? id : -1;
        string key = (first ? "" : prefix) + ch.ToString() + (last ? suffix : "");
        return vocab.TryGetValue(key, out int keyed) ? keyed : -1;
    }

    /// <summary>Merges the linked symbols starting at <paramref name="head"/> and appends the resulting ids.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void MergeAll(BpeWorkspace ws, int head, List<int> output)
    {
        for (int k = head; ws.Next[k] >= 0; k = ws.Next[k]) TryQueue(ws, k, ws.Next[k]);
        while (ws.Queue.TryDequeue(out var pair, out _))
        {
            int l = pair.Left, r = pair.Right;
            if (ws.Length[l] == 0 || ws.Next[l] != r || ws.Length[l] + ws.Length[r] != pair.Size) continue; // stale
            ws.MergeWithNext(l);
            ws.Token[l] = pair.Id;
            if (ws.Prev[l] >= 0) TryQueue(ws, ws.Prev[l], l);
            if (ws.Next[l] >= 0) TryQueue(ws, l, ws.Next[l]);
        }
        for (int k = head; k >= 0; k = ws.Next[k]) output.Add(ws.Token[k]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void TryQueue(BpeWorkspace ws, int left, int right)
    {
        if (merges.TryGetValue(PairKey(ws.Token[left], ws.Token[right]), out var merge))
            ws.Queue.Enqueue(new BpePair(left, right, ws.Length[left] + ws.Length[right], merge.Id), new BpePriority(-merge.Rank, left));
    }

    public static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;
}
