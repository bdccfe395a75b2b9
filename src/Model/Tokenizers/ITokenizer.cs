namespace UioLlm.Model.Tokenizers;

/// <summary>Turns text into token ids and back, for one fixed vocabulary.</summary>
public interface ITokenizer
{
    /// <summary>Number of ids; every id this tokenizer produces or accepts lies in [0, VocabSize).</summary>
    int VocabSize { get; }

    /// <summary>The beginning-of-sequence id, or -1 when the vocabulary has none.</summary>
    int BosId { get; }

    /// <summary>The end-of-sequence id, or -1 when the vocabulary has none.</summary>
    int EosId { get; }

    /// <summary>Token ids of <paramref name="text"/>, optionally wrapped in BOS / EOS (ignored where the vocabulary has none).</summary>
    int[] Encode(string text, bool addBos = false, bool addEos = false);

    /// <summary>The text of a whole id sequence (invalid UTF-8 from byte tokens becomes U+FFFD).</summary>
    string Decode(ReadOnlySpan<int> ids);

    /// <summary>The vocabulary entry of one id, exactly as stored (e.g. "▁the", "&lt;0x0A&gt;", "Ġthe").</summary>
    string TokenText(int id);

    /// <summary>A decoder for ids arriving one at a time, whose pieces add up to <see cref="Decode"/>.</summary>
    TokenStream NewStream();
}
