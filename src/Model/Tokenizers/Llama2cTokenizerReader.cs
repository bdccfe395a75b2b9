using System.Buffers.Binary;
using System.Text;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// Reads a llama2.c tokenizer.bin: int32 max_token_length, then per token a float32 score, an int32 byte length
/// and the UTF-8 bytes, until the end of the file. Ids 0, 1, 2 are unk, BOS, EOS; "&lt;0xNN&gt;" are byte tokens;
/// spaces are stored as ' ' and are escaped back to U+2581 here.
/// </summary>
internal static class Llama2cTokenizerReader
{
    public static SentencePieceVocab Read(string path)
    {
        byte[] data = File.ReadAllBytes(path);
        if (data.Length < 4) throw new ModelFormatException(path, $"llama2.c tokenizer: {data.Length} bytes, expected at least the 4-byte max_token_length");
        int maxLength = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxLength <= 0 || maxLength > 1 << 16)
            throw new ModelFormatException(path, $"llama2.c tokenizer: max_token_length is {maxLength}, expected 1..65536");

        var pieces = new List<string>();
        var scores = new List<float>();
        var utf8 = new UTF8Encoding(false, true);
        int pos = 4;
        while (pos < data.Length)
        {
            int id = pieces.Count;
            if (data.Length - pos < 8)
                throw new ModelFormatException(path, $"llama2.c tokenizer: token {id} at offset {pos}: truncated header ({data.Length - pos} of 8 bytes)");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(pos));
            int length = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(pos + 4));
            pos += 8;
            if (length < 0 || length > data.Length - pos)
                throw new ModelFormatException(path, $"llama2.c tokenizer: token {id} at offset {pos - 8}: length {length}, expected 0..{data.Length - pos}");
            string text;
            try { text = utf8.GetString(data, pos, length); }
            catch (DecoderFallbackException e) { throw new ModelFormatException(path, $"llama2.c tokenizer: token {id} is not valid UTF-8", e); }
            pos += length;
            pieces.Add(text.Replace(' ', '\u2581'));
            scores.Add(score);
        }
        if (pieces.Count < 3)
            throw new ModelFormatException(path, $"llama2.c tokenizer: {pieces.Count} tokens, expected at least unk, BOS and EOS");

        var types = new SentencePieceType[pieces.Count];
        for (int i = 0; i < types.Length; i++)
            types[i] = i == 0 ? SentencePieceType.Unknown
                : i <= 2 ? SentencePieceType.Control
                : SentencePieceVocab.TryParseBytePiece(pieces[i], out _) ? SentencePieceType.Byte
                : SentencePieceType.Normal;

        var vocab = new SentencePieceVocab
        {
            Source = path,
            Pieces = pieces.ToArray(),
            Scores = scores.ToArray(),
            Types = types,
            UnkId = 0,
            BosId = 1,
            EosId = 2,
            ByteFallback = true,
            AddDummyPrefix = true,
            RemoveExtraWhitespaces = false,
            EscapeWhitespaces = true,
        };
        vocab.Validate();
        return vocab;
    }
}
