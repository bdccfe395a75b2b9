namespace UioLlm.Model.Tokenizers;

/// <summary>The kind of a SentencePiece vocabulary entry (the numbering of sentencepiece_model.proto and GGUF token_type).</summary>
public enum SentencePieceType
{
    /// <summary>An ordinary piece produced by BPE merges.</summary>
    Normal = 1,
    /// <summary>The unknown piece (&lt;unk&gt;).</summary>
    Unknown = 2,
    /// <summary>A control symbol such as &lt;s&gt; or &lt;/s&gt;: never produced from text, decodes to "".</summary>
    Control = 3,
    /// <summary>A piece always matched whole in the text and never merged further.</summary>
    UserDefined = 4,
    /// <summary>A piece that merges may form but that is split back into its parts.</summary>
    Unused = 5,
    /// <summary>A byte-fallback piece &lt;0xNN&gt;.</summary>
    Byte = 6,
}

/// <summary>Everything a SentencePiece BPE tokenizer needs, whichever file it came from.</summary>
internal sealed class SentencePieceVocab
{
    public required string Source { get; init; }
    /// <summary>Pieces with spaces escaped as U+2581, as in tokenizer.model.</summary>
    public required string[] Pieces { get; init; }
    public required float[] Scores { get; init; }
    public required SentencePieceType[] Types { get; init; }
    public int UnkId { get; init; }
    public int BosId { get; init; } = -1;
    public int EosId { get; init; } = -1;
    public bool ByteFallback { get; init; }
    public bool AddDummyPrefix { get; init; } = true;
    public bool RemoveExtraWhitespaces { get; init; }
    public bool EscapeWhitespaces { get; init; } = true;
    /// <summary>What an unknown id decodes to (sentencepiece's unk_surface).</summary>
    public string UnkSurface { get; init; } = " \u2047 ";

    /// <summary>Checks the lengths and the special ids; throws a <see cref="ModelFormatException"/> naming the item.</summary>
    public void Validate()
    {
        int n = Pieces.Length;
        if (n == 0) throw new ModelFormatException(Source, "the vocabulary is empty");
        if (Scores.Length != n) throw new ModelFormatException(Source, $"{Scores.Length} scores for {n} pieces");
        if (Types.Length != n) throw new ModelFormatException(Source, $"{Types.Length} token types for {n} pieces");
        for (int i = 0; i < n; i++)
            if (!Enum.IsDefined(Types[i]))
                throw new ModelFormatException(Source, $"piece {i} ('{Pieces[i]}') has token type {(int)Types[i]}, expected 1..6");
        CheckId(UnkId, "unk id", allowNone: true);
        CheckId(BosId, "bos id", allowNone: true);
        CheckId(EosId, "eos id", allowNone: true);
    }

    private void CheckId(int id, string name, bool allowNone)
    {
        if (id == -1 && allowNone) return;
        if (id < 0 || id >= Pieces.Length)
            throw new ModelFormatException(Source, $"{name} {id} is outside the vocabulary of {Pieces.Length} pieces");
    }

    /// <summary>Parses "&lt;0xNN&gt;" into the byte NN.</summary>
    public static bool TryParseBytePiece(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}
