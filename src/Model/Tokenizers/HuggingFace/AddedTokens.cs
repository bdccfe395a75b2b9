namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>An entry of tokenizer.json added_tokens.</summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool Normalized, bool Lstrip, bool Rstrip, bool SingleWord);

/// <summary>
/// Finds added tokens in text the way Hugging Face does: leftmost match first, the longest one at that position,
/// no overlaps; single_word tokens only where no word character touches them (skipped otherwise); lstrip / rstrip
/// take the whitespace to the left / right into the token.
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, (string Text, AddedToken Token)[]> byFirstChar;
    private readonly System.Buffers.SearchValues<char> firstChars;

    /// <summary><paramref name="tokens"/> with the text to look for (the content, or its normalized form).</summary>
    public AddedTokenMatcher(IEnumerable<(string Text, AddedToken Token)> tokens)
    {
        byFirstChar = tokens.Where(t => t.Text.Length > 0)
            .GroupBy(t => t.Text[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Text.Length).ToArray());
        firstChars = System.Buffers.SearchValues.Create(byFirstChar.Keys.ToArray());
    }

    public bool IsEmpty => byFirstChar.Count == 0;

    /// <summary>
    /// Appends the segments of text[start..end): (start, end, id) with id -1 for text between added tokens.
    /// Segments may be empty only when the whole range is.
    /// </summary>
    public void Split(string text, int start, int end, List<(int Start, int End, int Id)> segments)
    {
        int plainStart = start;
        int i = start;
        while (i < end)
        {
            int skip = text.AsSpan(i, end - i).IndexOfAny(firstChars);
            if (skip < 0) break;
            i += skip;
            var candidates = byFirstChar[text[i]];
            (string Text, AddedToken Token)? found = null;
            foreach (var c in candidates)
                if (c.Text.Length <= end - i && text.AsSpan(i, c.Text.Length).SequenceEqual(c.Text)) { found = c; break; }
            if (found is not { } match) { i++; continue; }
            int mStart = i, mEnd = i + match.Text.Length;
            var token = match.Token;
            if (token.SingleWord && ((mStart > start && IsWordChar(text[mStart - 1])) || (mEnd < end && IsWordChar(text[mEnd]))))
            {
                i = mEnd; // the search goes on after the skipped match, as the automaton does
                continue;
            }
            if (token.Lstrip)
            {
                int s = mStart;
                while (s > plainStart && char.IsWhiteSpace(text[s - 1])) s--;
                mStart = s;
            }
            if (token.Rstrip)
                while (mEnd < end && char.IsWhiteSpace(text[mEnd])) mEnd++;
            if (mStart > plainStart) segments.Add((plainStart, mStart, -1));
            segments.Add((mStart, mEnd, token.Id));
            plainStart = i = mEnd;
        }
        if (plainStart < end || segments.Count == 0) segments.Add((plainStart, end, -1));
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
}

/// <summary>A tokenizer.json post-processor, for one sequence: the ids around the encoded text.</summary>
internal sealed class PostProcessor(int[] before, int[] after)
{
    public static readonly PostProcessor None = new([], []);

    public int[] Before { get; } = before;
    public int[] After { get; } = after;
}
