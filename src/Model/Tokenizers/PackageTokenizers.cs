using System.Buffers;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json;
using UioLlm.Model.Tokenizers.HuggingFace;
using Ml = Microsoft.ML.Tokenizers;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// SentencePiece Unigram models (tokenizer.model with model_type UNIGRAM, or a tokenizer.json whose model is
/// Unigram), encoded by Microsoft.ML.Tokenizers' Viterbi segmentation and decoded by our own decoder: pieces with
/// U+2581 as spaces, the dummy-prefix space dropped at the start, byte pieces as bytes, control pieces as nothing
/// (tokenizer.model); or the file's decoder chain (tokenizer.json). <see cref="NewStream"/> decodes the same way.
/// </summary>
public sealed class UnigramTokenizer : ITokenizer, ITokenBytes
{
    private readonly Ml.SentencePieceTokenizer inner;
    private readonly string[] pieces;
    private readonly byte[][] decodeBytes, decodeBytesAtStart;
    private readonly DecoderSpec? jsonDecoder;

    private UnigramTokenizer(Ml.SentencePieceTokenizer inner, string[] pieces, SentencePieceType[] types, int bos, int eos, int unk,
        bool dropLeadingSpace, DecoderSpec? jsonDecoder)
    {
        this.inner = inner;
        this.pieces = pieces;
        this.jsonDecoder = jsonDecoder;
        BosId = bos;
        EosId = eos;
        UnkId = unk;
        decodeBytes = new byte[pieces.Length][];
        decodeBytesAtStart = new byte[pieces.Length][];
        for (int id = 0; id < pieces.Length; id++)
        {
            byte[] bytes = types[id] switch
            {
                SentencePieceType.Control or SentencePieceType.Unused => [],
                SentencePieceType.Byte when SentencePieceVocab.TryParseBytePiece(pieces[id], out byte b) => [b],
                SentencePieceType.Unknown => Encoding.UTF8.GetBytes(" \u2047 "),
                _ => Encoding.UTF8.GetBytes(pieces[id].Replace('\u2581', ' ')),
            };
            decodeBytes[id] = bytes;
            decodeBytesAtStart[id] = dropLeadingSpace && bytes.Length > 0 && bytes[0] == (byte)' ' ? bytes[1..] : bytes;
        }
    }

    /// <summary>Loads a SentencePiece tokenizer.model whose trainer_spec.model_type is UNIGRAM.</summary>
    public static UnigramTokenizer FromModelFile(string path)
    {
        byte[] data = File.ReadAllBytes(path);
        var vocab = SentencePieceModelReader.Parse(data, path, unigram: true);
        Ml.SentencePieceTokenizer inner;
        try
        {
            using var stream = new MemoryStream(data, writable: false);
            inner = Ml.SentencePieceTokenizer.Create(stream, false, false);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or NotSupportedException)
        {
            throw new ModelFormatException(path, $"Microsoft.ML.Tokenizers could not open the Unigram model: {e.Message}", e);
        }
        return new UnigramTokenizer(inner, vocab.Pieces, vocab.Types, vocab.BosId, vocab.EosId, vocab.UnkId, vocab.AddDummyPrefix, null);
    }

    /// <summary>Loads a tokenizer.json whose model is Unigram (model.vocab as [piece, score] pairs).</summary>
    public static UnigramTokenizer FromTokenizerJson(string path)
    {
        string[] pieces;
        SentencePieceType[] types;
        int unk;
        DecoderSpec decoder;
        using (var doc = TokenizerJsonReader.Parse(path))
        {
            var root = doc.RootElement;
            string type = TokenizerJsonReader.ModelType(root);
            if (type != "Unigram") throw new ModelFormatException(path, $"model.type is '{type}', expected 'Unigram'");
            var model = root.GetProperty("model");
            if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Array || vocab.GetArrayLength() == 0)
                throw new ModelFormatException(path, "model.vocab must be a non-empty array of [piece, score] pairs");
            bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
            unk = -1;
            if (model.TryGetProperty("unk_id", out var u) && u.ValueKind != JsonValueKind.Null)
            {
                if (u.ValueKind != JsonValueKind.Number || !u.TryGetInt32(out unk) || unk < 0 || unk >= vocab.GetArrayLength())
                    throw new ModelFormatException(path, $"model.unk_id is {u.GetRawText()}, expected an id in [0, {vocab.GetArrayLength()})");
            }
            pieces = new string[vocab.GetArrayLength()];
            types = new SentencePieceType[pieces.Length];
            int i = 0;
            foreach (var entry in vocab.EnumerateArray())
            {
                if (entry.ValueKind != JsonValueKind.Array || entry.GetArrayLength() != 2 || entry[0].ValueKind != JsonValueKind.String
                    || entry[1].ValueKind != JsonValueKind.Number)
                    throw new ModelFormatException(path, $"model.vocab[{i}] is {entry.GetRawText()}, expected [\"piece\", score]");
                pieces[i] = entry[0].GetString()!;
                types[i] = i == unk ? SentencePieceType.Unknown
                    : byteFallback && SentencePieceVocab.TryParseBytePiece(pieces[i], out _) ? SentencePieceType.Byte : SentencePieceType.Normal;
                i++;
            }
            foreach (var added in TokenizerJsonReader.ReadAddedTokens(root, path))
                if (added.Special && added.Id < pieces.Length && added.Id != unk) types[added.Id] = SentencePieceType.Control;
            decoder = TokenizerJsonReader.ReadDecoderOf(root, path);
        }
        Ml.SentencePieceTokenizer inner;
        try
        {
            using var stream = File.OpenRead(path);
            inner = Ml.SentencePieceTokenizer.CreateFromTokenizerJson(stream, false, false);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or NotSupportedException or JsonException)
        {
            throw new ModelFormatException(path, $"Microsoft.ML.Tokenizers could not open the Unigram tokenizer.json: {e.Message}", e);
        }
        var (bos, eos) = (inner.BeginningOfSentenceId, inner.EndOfSentenceId);
        return new UnigramTokenizer(inner, pieces, types, Valid(bos, pieces.Length), Valid(eos, pieces.Length), unk, false, decoder);
    }

    private static int Valid(int id, int count) => (uint)id < (uint)count ? id : -1;

    /// <inheritdoc/>
    public int VocabSize => pieces.Length;
    /// <inheritdoc/>
    public int BosId { get; }
    /// <inheritdoc/>
    public int EosId { get; }
    /// <summary>The unknown id, or -1.</summary>
    public int UnkId { get; }

    /// <inheritdoc/>
    public string TokenText(int id) { TokenBytes.CheckId(id, VocabSize); return pieces[id]; }

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        if (text.Length > 0)
            ids.AddRange(inner.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: true, considerNormalization: true));
        if (addEos && EosId >= 0) ids.Add(EosId);
        return ids.ToArray();
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids)
    {
        if (jsonDecoder is null) return TokenBytes.Decode(this, ids);
        var chain = new DecodeChain(jsonDecoder);
        foreach (int id in ids) { TokenBytes.CheckId(id, VocabSize); chain.Push(pieces[id]); }
        chain.Flush();
        return chain.Take();
    }

    /// <inheritdoc/>
    public TokenStream NewStream() => jsonDecoder is null ? new TokenStream(this) : new TokenStream(new ChainStream(jsonDecoder, pieces));

    void ITokenBytes.AppendBytes(int id, ref bool atStart, ArrayBufferWriter<byte> output)
    {
        byte[] bytes = atStart ? decodeBytesAtStart[id] : decodeBytes[id];
        output.Write(bytes);
        if (bytes.Length > 0) atStart = false;
    }

    internal sealed class ChainStream(DecoderSpec spec, string[] tokens) : ITokenTextStream
    {
        private DecodeChain chain = new(spec);

        public string Push(int id)
        {
            TokenBytes.CheckId(id, tokens.Length);
            chain.Push(tokens[id]);
            return chain.Take();
        }

        public string Flush()
        {
            chain.Flush();
            string rest = chain.Take();
            chain = new DecodeChain(spec);
            return rest;
        }
    }
}

/// <summary>
/// OpenAI's tiktoken encodings cl100k_base (GPT-3.5 / GPT-4) and o200k_base (GPT-4o), encoded by
/// Microsoft.ML.Tokenizers with the vocabulary files its data packages ship (Microsoft.ML.Tokenizers.Data.Cl100kBase
/// and .O200kBase, embedded as deflated .tiktoken resources); decoded by our byte decoder from the same file, so that
/// <see cref="NewStream"/> holds back characters split across tokens. Special tokens (&lt;|endoftext|&gt; ...) in the
/// text are encoded as special ids, as tiktoken's encode with allowed_special="all" does.
/// </summary>
public sealed class TiktokenEncoding : ITokenizer, ITokenBytes
{
    private readonly Ml.TiktokenTokenizer inner;
    private readonly byte[]?[] tokenBytes;

    private TiktokenEncoding(string name, Ml.TiktokenTokenizer inner, byte[]?[] tokenBytes, int endOfText)
    {
        Name = name;
        this.inner = inner;
        this.tokenBytes = tokenBytes;
        BosId = EosId = endOfText;
    }

    /// <summary>The encoding names this build can open.</summary>
    public static IReadOnlyList<string> Names { get; } = ["cl100k_base", "o200k_base"];

    /// <summary>Opens "cl100k_base" or "o200k_base".</summary>
    public static TiktokenEncoding Create(string name)
    {
        string assembly = name switch
        {
            "cl100k_base" => "Microsoft.ML.Tokenizers.Data.Cl100kBase",
            "o200k_base" => "Microsoft.ML.Tokenizers.Data.O200kBase",
            _ => throw new ArgumentException($"tiktoken encoding '{name}' is not available: expected one of {string.Join(", ", Names)}", nameof(name)),
        };
        var inner = Ml.TiktokenTokenizer.CreateForEncoding(name);
        var specials = inner.SpecialTokens ?? new Dictionary<string, int>();
        var ranks = ReadRanks(assembly, name + ".tiktoken.deflate");
        int size = ranks.Count;
        foreach (var (_, id) in specials) size = Math.Max(size, id + 1);
        var table = new byte[]?[size];
        for (int id = 0; id < ranks.Count; id++) table[id] = ranks[id];
        foreach (var (text, id) in specials) table[id] = Encoding.UTF8.GetBytes(text);
        return new TiktokenEncoding(name, inner, table, specials.TryGetValue("<|endoftext|>", out int eot) ? eot : -1);
    }

    /// <summary>
    /// Token bytes by rank from the data package's embedded file: a "Capacity: N" line, then one base64 token per
    /// line in rank order (or tiktoken's own "base64 rank" lines).
    /// </summary>
    private static List<byte[]> ReadRanks(string assemblyName, string resource)
    {
        var assembly = Assembly.Load(assemblyName);
        using var raw = assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"{assemblyName} has no resource '{resource}'");
        using var inflated = new DeflateStream(raw, CompressionMode.Decompress);
        using var reader = new StreamReader(inflated, Encoding.UTF8);
        var byRank = new List<byte[]>();
        int lineNumber = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("Capacity:", StringComparison.Ordinal))) continue;
            int space = line.IndexOf(' ');
            if (space >= 0 && (!int.TryParse(line.AsSpan(space + 1), out int rank) || rank != byRank.Count))
                throw new InvalidOperationException($"{resource} line {lineNumber}: expected rank {byRank.Count}");
            byRank.Add(Convert.FromBase64String(space >= 0 ? line[..space] : line));
        }
        return byRank;
    }

    /// <summary>"cl100k_base" or "o200k_base".</summary>
    public string Name { get; }
    /// <inheritdoc/>
    public int VocabSize => tokenBytes.Length;
    /// <summary>&lt;|endoftext|&gt; (tiktoken has no separate BOS).</summary>
    public int BosId { get; }
    /// <summary>&lt;|endoftext|&gt;.</summary>
    public int EosId { get; }

    /// <inheritdoc/>
    public string TokenText(int id) => Encoding.UTF8.GetString(Bytes(id));

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        if (text.Length > 0) ids.AddRange(inner.EncodeToIds(text));
        if (addEos && EosId >= 0) ids.Add(EosId);
        return ids.ToArray();
    }

    /// <inheritdoc/>
    public string Decode(ReadOnlySpan<int> ids) => TokenBytes.Decode(this, ids);

    /// <inheritdoc/>
    public TokenStream NewStream() => new(this);

    void ITokenBytes.AppendBytes(int id, ref bool atStart, ArrayBufferWriter<byte> output)
    {
        output.Write(Bytes(id));
        atStart = false;
    }

    private byte[] Bytes(int id)
    {
        TokenBytes.CheckId(id, VocabSize);
        return tokenBytes[id] ?? throw new ArgumentOutOfRangeException(nameof(id), id, $"{Name} assigns no token to id {id}");
    }
}
