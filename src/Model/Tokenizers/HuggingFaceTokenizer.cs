using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;
using UioLlm.Model.Tokenizers.HuggingFace;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// A Hugging Face tokenizer.json with a BPE model, run as the Rust reference does: added tokens are found first
/// (those with normalized false in the raw text, the others after normalization), every stretch between them is
/// normalized and pre-tokenized, BPE encodes each pre-token (cached), and the post-processor's special tokens go
/// around the result when asked for. Decoding runs the file's decoder chain; <see cref="NewStream"/> runs the
/// same chain one id at a time.
/// </summary>
/// <remarks>
/// Supported: normalizers NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence; pre-tokenizers Split
/// (string or regex, every behaviour, invert), ByteLevel (with or without its regex, add_prefix_space), Metaspace,
/// Digits, WhitespaceSplit, Sequence; the BPE model with byte fallback, unk / fuse_unk, ignore_merges,
/// continuing_subword_prefix / end_of_word_suffix and merges as "a b" strings or ["a", "b"] pairs; post-processors
/// TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence; decoders ByteLevel, Replace,
/// ByteFallback, Fuse, Strip, Metaspace, Sequence. Anything else is refused on load, naming the field.
/// Unigram models go to <see cref="UnigramTokenizer"/> (through <see cref="Tokenizer.Load"/>).
/// </remarks>
public sealed class HuggingFaceTokenizer : ITokenizer
{
    private const int MaxCachedPieceLength = 128;

    private static readonly UTF8Encoding Utf8 = new(false, false);

    private readonly TokenizerJson spec;
    private readonly WordCache cache = new();
    private readonly ICoveringPattern? fastSplit;
    private readonly byte[]?[]? byteLevelDecode;

    internal HuggingFaceTokenizer(TokenizerJson spec)
    {
        this.spec = spec;
        // Split(covering regex, Isolated) alone or followed by a pass-through ByteLevel (Llama 3, Qwen, GPT-2 style):
        // the pieces are walked directly, without lists.
        fastSplit = spec.PreTokenizer switch
        {
            SplitPreTokenizer split => split.Covering,
            SequencePreTokenizer { Steps: [SplitPreTokenizer split, ByteLevelPreTokenizer { PassesThrough: true }] } => split.Covering,
            SequencePreTokenizer { Steps: [SplitPreTokenizer split] } => split.Covering,
            ByteLevelPreTokenizer { SplitsOnly: true } => new Gpt2Pattern(),
            _ => null,
        };
        // A lone ByteLevel decoder is a byte table: whole-sequence decoding needs no chain (the stream uses the chain).
        if (spec.Decoder is ByteLevelDecoderSpec)
        {
            byteLevelDecode = new byte[]?[spec.Tokens.Length];
            for (int id = 0; id < spec.Tokens.Length; id++)
                if (spec.Tokens[id] is { } token) byteLevelDecode[id] = ByteLevelDecoderSpec.TokenBytes(token);
        }
    }

    /// <summary>Loads a tokenizer.json (BPE model). A tokenizer_config.json beside it supplies BOS / EOS.</summary>
    public static HuggingFaceTokenizer FromFile(string path) => new(TokenizerJsonReader.ReadBpe(path));

    /// <inheritdoc/>
    public int VocabSize => spec.Tokens.Length;
    /// <inheritdoc/>
    public int BosId => spec.BosId;
    /// <inheritdoc/>
    public int EosId => spec.EosId;

    /// <summary>The ids the post-processor puts before and after the text (e.g. Mistral's &lt;s&gt;; none for Llama 3's file).</summary>
    public IReadOnlyList<int> SpecialIdsBefore => spec.PostProcessor.Before;
    /// <inheritdoc cref="SpecialIdsBefore"/>
    public IReadOnlyList<int> SpecialIdsAfter => spec.PostProcessor.After;

    /// <summary>True when the id is an added token marked special.</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)spec.Special.Length && spec.Special[id];

    /// <inheritdoc/>
    public string TokenText(int id) { TokenBytes.CheckId(id, VocabSize); return spec.Tokens[id] ?? ""; }

    /// <summary>The id of a token (model vocabulary or added token), or -1.</summary>
    public int TokenId(string token) => spec.Ids.TryGetValue(token, out int id) ? id : -1;

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        EncodeCore(text, ids);
        if (addEos && EosId >= 0) ids.Add(EosId);
        return ids.ToArray();
    }

    /// <summary>
    /// Hugging Face's encode(text, add_special_tokens): the ids of <see cref="Encode"/> with the post-processor's
    /// special tokens around them.
    /// </summary>
    public int[] EncodeWithSpecialTokens(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        ids.AddRange(spec.PostProcessor.Before);
        EncodeCore(text, ids);
        ids.AddRange(spec.PostProcessor.After);
        return ids.ToArray();
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids) => Decode(ids, skipSpecialTokens: false);

    /// <summary>Decodes through the file's decoder chain; special tokens are kept (as Hugging Face's default) unless skipped.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens)
    {
        if (byteLevelDecode is not null)
        {
            var bytes = new System.Buffers.ArrayBufferWriter<byte>(Math.Max(16, ids.Length * 4));
            foreach (int id in ids)
            {
                TokenBytes.CheckId(id, VocabSize);
                if (skipSpecialTokens && IsSpecial(id)) continue;
                if (byteLevelDecode[id] is { } b) bytes.Write(b);
            }
            return Utf8.GetString(bytes.WrittenSpan);
        }
        var chain = new DecodeChain(spec.Decoder);
        foreach (int id in ids)
        {
            TokenBytes.CheckId(id, VocabSize);
            if (skipSpecialTokens && IsSpecial(id)) continue;
            if (spec.Tokens[id] is { } token) chain.Push(token);
        }
        chain.Flush();
        return chain.Take();
    }

    /// <inheritdoc/>
    public TokenStream NewStream() => new(new Stream(this));

    private sealed class Stream(HuggingFaceTokenizer owner) : ITokenTextStream
    {
        private DecodeChain chain = new(owner.spec.Decoder);

        public string Push(int id)
        {
            TokenBytes.CheckId(id, owner.VocabSize);
            if (owner.spec.Tokens[id] is { } token) chain.Push(token);
            return chain.Take();
        }

        public string Flush()
        {
            chain.Flush();
            string rest = chain.Take();
            chain = new DecodeChain(owner.spec.Decoder);
            return rest;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void EncodeCore(string text, List<int> ids)
    {
        var segments = new List<(int Start, int End, int Id)>();
        var pieces = new List<Piece>();
        if (spec.RawAdded.IsEmpty) segments.Add((0, text.Length, -1));
        else spec.RawAdded.Split(text, 0, text.Length, segments);
        var inner = new List<(int Start, int End, int Id)>();
        foreach (var (start, end, id) in segments)
        {
            if (id >= 0) { ids.Add(id); continue; }
            if (end == start) continue;
            string source = text;
            int s = start, e = end;
            if (spec.Normalizer is not null)
            {
                source = spec.Normalizer.Normalize(text[start..end]);
                s = 0;
                e = source.Length;
            }
            bool atStart = start == 0;
            if (spec.NormalizedAdded.IsEmpty) EncodeStretch(new Piece(source, s, e - s, atStart), pieces, ids);
            else
            {
                inner.Clear();
                spec.NormalizedAdded.Split(source, s, e, inner);
                foreach (var (s2, e2, id2) in inner)
                {
                    if (id2 >= 0) ids.Add(id2);
                    else if (e2 > s2) EncodeStretch(new Piece(source, s2, e2 - s2, atStart && s2 == s), pieces, ids);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: skip the slow first JIT tier
    private void EncodeStretch(Piece stretch, List<Piece> pieces, List<int> ids)
    {
        if (fastSplit is not null)
        {
            int end = stretch.Start + stretch.Length;
            for (int i = stretch.Start; i < end;)
            {
                int next = fastSplit.MatchEnd(stretch.Text, i, end);
                EncodePiece(stretch.Text.AsSpan(i, next - i), ids);
                i = next;
            }
            return;
        }
        if (spec.SplitAtWordStarts)
        {
            var text = stretch.Span;
            int from = 0;
            for (int k = 1; k < text.Length; k++)
                if (text[k] == '\u2581' && text[k - 1] != '\u2581') { EncodePiece(text[from..k], ids); from = k; }
            EncodePiece(text[from..], ids);
            return;
        }
        pieces.Clear();
        if (spec.PreTokenizer is null) pieces.Add(stretch);
        else spec.PreTokenizer.Split(stretch, pieces);
        foreach (var piece in pieces) EncodePiece(piece.Span, ids);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void EncodePiece(ReadOnlySpan<char> span, List<int> ids)
    {
        if (span.Length == 0) return;
        if (span.Length > MaxCachedPieceLength) { spec.Model.Encode(span, ids); return; }
        if (!cache.TryGet(span, out int[] cached))
        {
            var one = new List<int>(4);
            spec.Model.Encode(span, one);
            cached = one.ToArray();
            cache.Add(span, cached);
        }
        ids.AddRange(cached);
    }
}
