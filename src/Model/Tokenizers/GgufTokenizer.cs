using UioLlm.Model.Formats;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// Builds a tokenizer from the vocabulary stored in a GGUF file's metadata (tokenizer.ggml.*):
/// "llama" -> <see cref="SentencePieceTokenizer"/>, "gpt2" -> <see cref="ByteLevelBpeTokenizer"/>.
/// </summary>
public static class GgufTokenizer
{
    private const string ModelKey = "tokenizer.ggml.model", PreKey = "tokenizer.ggml.pre";
    private const string TokensKey = "tokenizer.ggml.tokens", ScoresKey = "tokenizer.ggml.scores";
    private const string TypesKey = "tokenizer.ggml.token_type", MergesKey = "tokenizer.ggml.merges";
    private const string BosKey = "tokenizer.ggml.bos_token_id", EosKey = "tokenizer.ggml.eos_token_id";
    private const string UnkKey = "tokenizer.ggml.unknown_token_id";
    private const string AddSpacePrefixKey = "tokenizer.ggml.add_space_prefix";
    private const string RemoveExtraWhitespacesKey = "tokenizer.ggml.remove_extra_whitespaces";

    /// <summary>Reads the GGUF header of <paramref name="path"/> and builds its tokenizer.</summary>
    public static ITokenizer Load(string path) => FromGguf(GgufFile.Read(path));

    /// <summary>The tokenizer described by an already-read GGUF file.</summary>
    public static ITokenizer FromGguf(GgufFile gguf)
    {
        ArgumentNullException.ThrowIfNull(gguf);
        string model = gguf.GetString(ModelKey);
        return model switch
        {
            "llama" => new SentencePieceTokenizer(ReadSentencePiece(gguf)),
            "gpt2" => new ByteLevelBpeTokenizer(ReadByteLevel(gguf)),
            _ => throw new ModelFormatException(gguf.Path, $"metadata '{ModelKey}' is '{model}', expected 'llama' (SentencePiece) or 'gpt2' (byte-level BPE)"),
        };
    }

    private static SentencePieceVocab ReadSentencePiece(GgufFile gguf)
    {
        string[] tokens = gguf.GetStrings(TokensKey);
        float[] scores = gguf.Metadata.ContainsKey(ScoresKey) ? gguf.GetFloats(ScoresKey) : new float[tokens.Length];
        var types = ReadTypes(gguf, tokens.Length);
        var vocab = new SentencePieceVocab
        {
            Source = gguf.Path,
            Pieces = tokens,
            Scores = scores,
            Types = types,
            UnkId = OptionalInt(gguf, UnkKey, 0),
            BosId = OptionalInt(gguf, BosKey, 1),
            EosId = OptionalInt(gguf, EosKey, 2),
            ByteFallback = types.Contains(SentencePieceType.Byte),
            AddDummyPrefix = OptionalBool(gguf, AddSpacePrefixKey, true),
            RemoveExtraWhitespaces = OptionalBool(gguf, RemoveExtraWhitespacesKey, false),
            EscapeWhitespaces = true,
        };
        vocab.Validate();
        return vocab;
    }

    private static ByteLevelBpeVocab ReadByteLevel(GgufFile gguf)
    {
        if (gguf.TryGet(PreKey, out string pre) && pre is not ("gpt-2" or "default"))
            throw new ModelFormatException(gguf.Path, $"metadata '{PreKey}' is '{pre}'; only the GPT-2 split pattern ('gpt-2' or 'default') is supported");
        string[] tokens = gguf.GetStrings(TokensKey);
        var types = ReadTypes(gguf, tokens.Length);
        var merges = new List<(string, string)>();
        string[] mergeLines = gguf.GetStrings(MergesKey);
        for (int i = 0; i < mergeLines.Length; i++)
        {
            string line = mergeLines[i];
            int space = line.IndexOf(' ');
            if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
                throw new ModelFormatException(gguf.Path, $"metadata '{MergesKey}' element {i} is '{line}', expected two tokens separated by one space");
            merges.Add((line[..space], line[(space + 1)..]));
        }
        var userDefined = Enumerable.Range(0, tokens.Length).Where(i => types[i] == SentencePieceType.UserDefined).ToArray();
        return new ByteLevelBpeVocab
        {
            Source = gguf.Path,
            Tokens = tokens,
            Merges = merges,
            AddedTokens = userDefined,
            BosId = OptionalInt(gguf, BosKey, -1),
            EosId = OptionalInt(gguf, EosKey, -1),
        };
    }

    /// <summary>tokenizer.ggml.token_type (same numbering as SentencePiece); all NORMAL when absent.</summary>
    private static SentencePieceType[] ReadTypes(GgufFile gguf, int count)
    {
        var types = new SentencePieceType[count];
        if (!gguf.Metadata.ContainsKey(TypesKey))
        {
            Array.Fill(types, SentencePieceType.Normal);
            return types;
        }
        int[] raw = gguf.GetInts(TypesKey);
        if (raw.Length != count)
            throw new ModelFormatException(gguf.Path, $"metadata '{TypesKey}' has {raw.Length} entries, expected {count} (one per token)");
        for (int i = 0; i < count; i++)
        {
            if (raw[i] is < 1 or > 6)
                throw new ModelFormatException(gguf.Path, $"metadata '{TypesKey}' element {i} is {raw[i]}, expected 1..6");
            types[i] = (SentencePieceType)raw[i];
        }
        return types;
    }

    private static int OptionalInt(GgufFile gguf, string key, int fallback) =>
        gguf.Metadata.ContainsKey(key) ? gguf.GetInt(key) : fallback;

    private static bool OptionalBool(GgufFile gguf, string key, bool fallback) =>
        gguf.TryGet(key, out bool value) ? value : fallback;
}
