using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.RegularExpressions;

namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>
/// What a Split pre-tokenizer searches for: all non-overlapping matches, left to right, in text[start..end)
/// taken as a string of its own (as Hugging Face applies the pattern to each piece separately).
/// </summary>
internal abstract class SplitPattern
{
    /// <summary>Appends (start, end) of every match, absolute indices, in order.</summary>
    public abstract void FindMatches(string text, int start, int end, List<(int Start, int End)> matches);

    /// <summary>
    /// The pattern for a tokenizer.json Split: the regexes of GPT-2, Llama 3 / cl100k and Qwen 2/3 get hand-written
    /// matchers (same results, several times faster); any other regex runs on .NET's engine, on code points.
    /// </summary>
    public static SplitPattern ForRegex(string pattern, string source)
    {
        if (pattern == Gpt2PreTokenizer.Pattern) return new Gpt2Pattern();
        if (pattern == WordsDigitsPattern.Llama3Regex) return new WordsDigitsPattern(3);
        if (pattern == WordsDigitsPattern.QwenRegex) return new WordsDigitsPattern(1);
        return new RegexPattern(pattern, source);
    }
}

/// <summary>A pattern whose matches cover any text, one after the other: the tokenizer walks them without lists.</summary>
internal interface ICoveringPattern
{
    /// <summary>The end of the match that starts at <paramref name="start"/> (text[start..end) taken as the whole input).</summary>
    int MatchEnd(string text, int start, int end);
}

/// <summary>A literal string: each occurrence is a match.</summary>
internal sealed class LiteralPattern(string literal) : SplitPattern
{
    public override void FindMatches(string text, int start, int end, List<(int, int)> matches)
    {
        if (literal.Length == 0) return;
        int at = start;
        while (at < end)
        {
            int found = text.AsSpan(at, end - at).IndexOf(literal, StringComparison.Ordinal);
            if (found < 0) break;
            matches.Add((at + found, at + found + literal.Length));
            at += found + literal.Length;
        }
    }
}

/// <summary>A character predicate: each character (code point) that satisfies it is a match of its own.</summary>
internal sealed class CharClassPattern(Func<Rune, bool> predicate) : SplitPattern
{
    public override void FindMatches(string text, int start, int end, List<(int, int)> matches)
    {
        for (int i = start; i < end;)
        {
            var rune = CodePoints.At(text, i, end, out int width);
            if (predicate(rune)) matches.Add((i, i + width));
            i += width;
        }
    }
}

/// <summary>GPT-2's pattern (ByteLevel use_regex, or a Split with the same regex): every piece is a match.</summary>
internal sealed class Gpt2Pattern : SplitPattern, ICoveringPattern
{
    public int MatchEnd(string text, int start, int end) => Gpt2PreTokenizer.PieceEnd(text.AsSpan(0, end), start);

    public override void FindMatches(string text, int start, int end, List<(int, int)> matches)
    {
        var span = text.AsSpan(start, end - start);
        for (int i = 0; i < span.Length;)
        {
            int next = Gpt2PreTokenizer.PieceEnd(span, i);
            matches.Add((start + i, start + next));
            i = next;
        }
    }
}

/// <summary>
/// The Llama 3 (tiktoken cl100k) regex, with digits in groups of up to three, and Qwen's variant with single
/// digits, matched by hand on code points:
/// <c>(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+</c>.
/// Every position starts a match, so the matches cover the text.
/// </summary>
internal sealed class WordsDigitsPattern(int maxDigits) : SplitPattern, ICoveringPattern
{
    public const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string QwenRegex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public override void FindMatches(string text, int start, int end, List<(int, int)> matches)
    {
        for (int i = start; i < end;)
        {
            int next = MatchEnd(text, i, end);
            matches.Add((i, next));
            i = next;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public int MatchEnd(string text, int i, int n)
    {
        char c = text[i];
        // (?i:'s|'t|'re|'ve|'m|'ll|'d): case folding also maps U+017F (long s) to s.
        if (c == '\'' && i + 1 < n)
        {
            char a = char.ToLowerInvariant(text[i + 1]);
            if (a is 's' or 't' or 'm' or 'd' or '\u017F') return i + 2;
            if (i + 2 < n)
            {
                char b = char.ToLowerInvariant(text[i + 2]);
                if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
            }
        }
        var cls = CodePoints.Classify(text, i, n, out int width);
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (cls == CharKind.Letter) return LetterRun(text, i + width, n);
        if (cls != CharKind.Number && c != '\r' && c != '\n' && i + width < n
            && CodePoints.Classify(text, i + width, n, out int w2) == CharKind.Letter)
            return LetterRun(text, i + width + w2, n);
        // \p{N}{1,maxDigits}
        if (cls == CharKind.Number)
        {
            int j = i + width, count = 1;
            while (count < maxDigits && j < n && CodePoints.Classify(text, j, n, out int w) == CharKind.Number) { j += w; count++; }
            return j;
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        int run = i;
        if (c == ' ' && i + 1 < n && CodePoints.Classify(text, i + 1, n, out _) == CharKind.Other) run = i + 1;
        if (CodePoints.Classify(text, run, n, out int w3) == CharKind.Other)
        {
            int j = run + w3;
            while (j < n && CodePoints.Classify(text, j, n, out int w) == CharKind.Other) j += w;
            while (j < n && text[j] is '\r' or '\n') j++;
            return j;
        }
        // Whitespace from here on: \s*[\r\n]+ | \s+(?!\S) | \s+
        int end = i;
        int lastNewline = -1;
        while (end < n && CodePoints.Classify(text, end, n, out int w) == CharKind.Space)
        {
            if (text[end] is '\r' or '\n') lastNewline = end;
            end += w;
        }
        if (lastNewline >= 0) return lastNewline + 1;
        if (end == n) return n;
        return end - i >= 2 ? end - 1 : end; // leave the last space to the word that follows (one space alone stays)
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int LetterRun(string text, int j, int n)
    {
        while (j < n && CodePoints.Classify(text, j, n, out int w) == CharKind.Letter) j += w;
        return j;
    }
}

internal enum CharKind { Letter, Number, Space, Other }

/// <summary>Code-point helpers: a valid surrogate pair is one character; an unpaired surrogate is "other".</summary>
internal static class CodePoints
{
    public static Rune At(string text, int i, int end, out int width)
    {
        char c = text[i];
        if (char.IsHighSurrogate(c) && i + 1 < end && char.IsLowSurrogate(text[i + 1]))
        {
            width = 2;
            return new Rune(c, text[i + 1]);
        }
        width = 1;
        return char.IsSurrogate(c) ? Rune.ReplacementChar : new Rune(c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static CharKind Classify(string text, int i, int end, out int width)
    {
        char c = text[i];
        width = 1;
        if (c < 0x80)
        {
            if ((uint)((c | 0x20) - 'a') <= 'z' - 'a') return CharKind.Letter;
            if ((uint)(c - '0') <= 9) return CharKind.Number;
            return c == ' ' || (uint)(c - '\t') <= '\r' - '\t' ? CharKind.Space : CharKind.Other;
        }
        return ClassifySlow(text, i, end, out width);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static CharKind ClassifySlow(string text, int i, int end, out int width)
    {
        char c = text[i];
        width = 1;
        if (char.IsHighSurrogate(c) && i + 1 < end && char.IsLowSurrogate(text[i + 1]))
        {
            width = 2;
            var rune = new Rune(c, text[i + 1]);
            return Rune.IsLetter(rune) ? CharKind.Letter : Rune.IsNumber(rune) ? CharKind.Number
                : Rune.IsWhiteSpace(rune) ? CharKind.Space : CharKind.Other;
        }
        return char.IsLetter(c) ? CharKind.Letter : char.IsNumber(c) ? CharKind.Number
            : char.IsWhiteSpace(c) ? CharKind.Space : CharKind.Other;
    }
}

/// <summary>
/// Any other regex, on .NET's backtracking engine (the same leftmost-first semantics as Oniguruma, which Hugging
/// Face uses). .NET classes such as \p{L} look at UTF-16 units, so a piece holding supplementary-plane characters is
/// matched on a copy where each of them is replaced by a BMP character of the same Unicode category; the match
/// positions are mapped back. (A pattern that names a supplementary character literally would not see it.)
/// </summary>
internal sealed class RegexPattern : SplitPattern
{
    private static readonly char[] Representatives = BuildRepresentatives();
    private readonly Regex regex;

    public RegexPattern(string pattern, string source)
    {
        try
        {
            regex = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled, TimeSpan.FromSeconds(10));
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(source, $"pre_tokenizer Split regex '{pattern}' is not supported by the .NET regex engine: {e.Message}", e);
        }
    }

    public override void FindMatches(string text, int start, int end, List<(int, int)> matches)
    {
        string piece = text.Substring(start, end - start);
        int[]? map = null;
        if (piece.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0) piece = SurrogateFree(piece, out map);
        int first = matches.Count;
        for (var m = regex.Match(piece); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            matches.Add((m.Index, m.Index + m.Length));
        }
        for (int k = first; k < matches.Count; k++)
        {
            var (s, e) = matches[k];
            matches[k] = map is null ? (start + s, start + e) : (start + map[s], start + map[e]);
        }
    }

    /// <summary>The piece with each surrogate pair replaced by one BMP character of its category; map[i] = original index.</summary>
    private static string SurrogateFree(string piece, out int[] map)
    {
        var sb = new StringBuilder(piece.Length);
        var positions = new List<int>(piece.Length + 1);
        for (int i = 0; i < piece.Length;)
        {
            positions.Add(i);
            if (char.IsHighSurrogate(piece[i]) && i + 1 < piece.Length && char.IsLowSurrogate(piece[i + 1]))
            {
                var category = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(piece[i], piece[i + 1]));
                sb.Append(Representatives[(int)category]);
                i += 2;
            }
            else sb.Append(piece[i++]);
        }
        positions.Add(piece.Length);
        map = positions.ToArray();
        return sb.ToString();
    }

    private static char[] BuildRepresentatives()
    {
        var result = new char[32];
        Array.Fill(result, '\uFFFF'); // unassigned
        for (int c = 0xFFFD; c >= 0x20; c--) // prefer low code points: scan down so the lowest wins
        {
            if (c is >= 0xD800 and <= 0xDFFF) continue;
            result[(int)CharUnicodeInfo.GetUnicodeCategory((char)c)] = (char)c;
        }
        return result;
    }
}
