using System.Buffers;
using System.Text;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// Where a tokenizer's ids turn into bytes: both <see cref="ITokenizer.Decode"/> and <see cref="TokenStream"/>
/// go through it, so the streamed text and the whole decode cannot disagree.
/// </summary>
internal interface ITokenBytes
{
    /// <summary>Number of valid ids.</summary>
    int VocabSize { get; }

    /// <summary>
    /// Appends the UTF-8 bytes of one id. <paramref name="atStart"/> is true until the first id that produced
    /// visible text (the SentencePiece dummy-prefix space is dropped there); implementations update it.
    /// </summary>
    void AppendBytes(int id, ref bool atStart, ArrayBufferWriter<byte> output);
}

/// <summary>
/// A tokenizer's own streaming decoder state, for decoders that are not a plain per-id byte mapping (tokenizer.json
/// decoder chains): <see cref="Push"/> returns the text completed by one id, <see cref="Flush"/> the rest and resets.
/// </summary>
internal interface ITokenTextStream
{
    string Push(int id);
    string Flush();
}

/// <summary>
/// Decodes ids one at a time for streaming generation. <see cref="Push"/> returns the text that became complete;
/// a character split over several byte tokens is held back until its last byte arrives. The concatenation of all
/// <see cref="Push"/> results and <see cref="Flush"/> equals <see cref="ITokenizer.Decode"/> of the whole sequence.
/// </summary>
public sealed class TokenStream
{
    private readonly ITokenBytes source = null!;
    private readonly ITokenTextStream? textStream;
    private readonly Decoder utf8 = new UTF8Encoding(false, false).GetDecoder();
    private readonly ArrayBufferWriter<byte> bytes = new(64);
    private char[] chars = new char[64];
    private bool atStart = true;

    internal TokenStream(ITokenBytes source) => this.source = source;

    internal TokenStream(ITokenTextStream textStream) => this.textStream = textStream;

    /// <summary>Adds one id and returns the text completed by it (possibly empty).</summary>
    public string Push(int id)
    {
        if (textStream is not null) return textStream.Push(id);
        TokenBytes.CheckId(id, source.VocabSize);
        bytes.ResetWrittenCount();
        source.AppendBytes(id, ref atStart, bytes);
        return DecodePending(flush: false);
    }

    /// <summary>Ends the sequence: returns what is still held back (U+FFFD for an incomplete character) and resets.</summary>
    public string Flush()
    {
        if (textStream is not null) return textStream.Flush();
        bytes.ResetWrittenCount();
        string rest = DecodePending(flush: true);
        atStart = true;
        return rest;
    }

    private string DecodePending(bool flush)
    {
        ReadOnlySpan<byte> input = bytes.WrittenSpan;
        int needed = utf8.GetCharCount(input, flush: false) + 4;
        if (chars.Length < needed) chars = new char[Math.Max(needed, chars.Length * 2)];
        int n = utf8.GetChars(input, chars, flush);
        return n == 0 ? string.Empty : new string(chars, 0, n);
    }
}

/// <summary>Whole-sequence decoding through <see cref="ITokenBytes"/>.</summary>
internal static class TokenBytes
{
    private static readonly UTF8Encoding Utf8 = new(false, false);

    public static string Decode(ITokenBytes source, ReadOnlySpan<int> ids)
    {
        var output = new ArrayBufferWriter<byte>(Math.Max(16, ids.Length * 4));
        bool atStart = true;
        foreach (int id in ids)
        {
            CheckId(id, source.VocabSize);
            source.AppendBytes(id, ref atStart, output);
        }
        return Utf8.GetString(output.WrittenSpan);
    }

    public static void CheckId(int id, int vocabSize)
    {
        if ((uint)id >= (uint)vocabSize)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id {id} is outside the vocabulary [0, {vocabSize})");
    }

    /// <summary>Appends the UTF-8 bytes of a string.</summary>
    public static void AppendUtf8(string text, ArrayBufferWriter<byte> output)
    {
        int n = Utf8.GetByteCount(text);
        Utf8.GetBytes(text, output.GetSpan(n));
        output.Advance(n);
    }
}
