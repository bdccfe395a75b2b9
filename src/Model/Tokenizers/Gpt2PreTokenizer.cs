using System.Runtime.CompilerServices;
using System.Text;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// Splits text into the pieces GPT-2's BPE runs on, by hand, with the exact behaviour of the regular expression
/// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c> applied to Unicode code
/// points (as Python's regex, tiktoken and Hugging Face tokenizers do: a supplementary-plane letter counts as
/// a letter; an unpaired surrogate counts as "other").
/// </summary>
public static class Gpt2PreTokenizer
{
    /// <summary>The regular expression this splitter implements.</summary>
    public const string Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private enum CharClass { Letter, Number, Space, Other }

    /// <summary>The pieces of <paramref name="text"/> as (start, length) ranges, in order; they cover the text.</summary>
    public static List<Range> Split(ReadOnlySpan<char> text)
    {
        var pieces = new List<Range>();
        for (int i = 0; i < text.Length;)
        {
            int end = PieceEnd(text, i);
            pieces.Add(i..end);
            i = end;
        }
        return pieces;
    }

    /// <summary>The end (exclusive) of the piece that starts at <paramref name="start"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int PieceEnd(ReadOnlySpan<char> text, int start)
    {
        if ((uint)start >= (uint)text.Length) throw new ArgumentOutOfRangeException(nameof(start));
        int n = text.Length;
        char c = text[start];

        // 's 't 're 've 'm 'll 'd
        if (c == '\'' && start + 1 < n)
        {
            char a = text[start + 1];
            if (a is 's' or 't' or 'm' or 'd') return start + 2;
            if (start + 2 < n)
            {
                char b = text[start + 2];
                if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return start + 3;
            }
        }

        //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ : an optional space, then a run of one class.
        int runStart = c == ' ' && start + 1 < n ? start + 1 : start;
        var cls = Classify(text, runStart, out int width);
        if (cls != CharClass.Space)
        {
            int i = runStart + width;
            while (i < n && Classify(text, i, out width) == cls) i += width;
            return i;
        }

        // \s+(?!\S) | \s+ : a whitespace run, leaving its last character to the next piece when a non-space follows.
        int end = start;
        while (end < n && Classify(text, end, out width) == CharClass.Space) end += width;
        if (end == n) return n;
        return end - start >= 2 ? end - 1 : end;
    }

    private static CharClass Classify(ReadOnlySpan<char> text, int i, out int width)
    {
        char c = text[i];
        width = 1;
        if (c < 0x80) // ASCII fast path
        {
            if ((uint)((c | 0x20) - 'a') <= 'z' - 'a') return CharClass.Letter;
            if ((uint)(c - '0') <= 9) return CharClass.Number;
            return c == ' ' || (uint)(c - '\t') <= '\r' - '\t' ? CharClass.Space : CharClass.Other;
        }
        if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
        {
            width = 2;
            var rune = new Rune(c, text[i + 1]);
            return Rune.IsLetter(rune) ? CharClass.Letter
                : Rune.IsNumber(rune) ? CharClass.Number
                : Rune.IsWhiteSpace(rune) ? CharClass.Space
                : CharClass.Other;
        }
        return char.IsLetter(c) ? CharClass.Letter
            : char.IsNumber(c) ? CharClass.Number
            : char.IsWhiteSpace(c) ? CharClass.Space
            : CharClass.Other;
    }
}
