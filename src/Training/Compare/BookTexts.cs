using UioLlm.Model.Tokenizers;
using UioLlm.Training.Data;

namespace UioLlm.Training.Compare;

/// <summary>Public-domain books as token streams: Project Gutenberg's header and licence cut off, line ends normalised.</summary>
public static class BookTexts
{
    /// <summary>
    /// The text between Project Gutenberg's "*** START OF ..." and "*** END OF ..." lines (either may be missing: then
    /// the text runs from the start, or to the end). Other "END OF" lines in a book (chapter ends) are kept.
    /// </summary>
    public static string Body(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = DocumentSource.NormaliseLineEnds(text);
        int start = Marker(text, "START OF", 0), end = start < 0 ? Marker(text, "END OF", 0) : Marker(text, "END OF", start);
        int from = start < 0 ? 0 : LineEnd(text, start);
        int to = end < 0 ? text.Length : LineStart(text, end);
        return text[from..Math.Max(from, to)].Trim('\n');
    }

    /// <summary>The tokens of a book file's body (no BOS).</summary>
    /// <exception cref="DataFormatException">The file is missing or holds too little text for <paramref name="minTokens"/> tokens.</exception>
    public static int[] Tokens(string path, ITokenizer tokenizer, int minTokens)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (!File.Exists(path)) throw new DataFormatException(path, null, "the book does not exist");
        var ids = tokenizer.Encode(Body(File.ReadAllText(path)));
        if (ids.Length < minTokens)
            throw new DataFormatException(path, null, $"the book has {ids.Length} tokens, but at least {minTokens} are needed");
        return ids;
    }

    // A marker line starts with "***" (optionally a space) and then the phrase, as Project Gutenberg writes them.
    private static int Marker(string text, string phrase, int from)
    {
        for (int i = text.IndexOf("***", from, StringComparison.Ordinal); i >= 0; i = text.IndexOf("***", i + 3, StringComparison.Ordinal))
        {
            if (i > 0 && text[i - 1] != '\n') continue;
            int j = i + 3;
            while (j < text.Length && text[j] == ' ') j++;
            if (string.CompareOrdinal(text, j, phrase, 0, phrase.Length) == 0) return i;
        }
        return -1;
    }

    private static int LineEnd(string text, int at)
    {
        int n = text.IndexOf('\n', at);
        return n < 0 ? text.Length : n + 1;
    }

    private static int LineStart(string text, int at) => at == 0 ? 0 : text.LastIndexOf('\n', at - 1) + 1;
}
