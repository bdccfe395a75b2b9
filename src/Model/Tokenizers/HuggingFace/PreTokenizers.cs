using System.Text;

namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>
/// A piece of text on its way to the model: text[Start..Start+Length). <see cref="AtStart"/> is true when the
/// piece begins at offset 0 of the original input (Metaspace's prepend_scheme "first" asks for that).
/// </summary>
internal readonly record struct Piece(string Text, int Start, int Length, bool AtStart)
{
    public ReadOnlySpan<char> Span => Text.AsSpan(Start, Length);
}

/// <summary>How a Split pre-tokenizer treats the matches of its pattern (Hugging Face SplitDelimiterBehavior).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>A tokenizer.json pre-tokenizer: cuts one piece into pieces (and may rewrite their text).</summary>
internal abstract class PreTokenizerStep
{
    public abstract void Split(in Piece piece, List<Piece> output);
}

/// <summary>Split: a pattern and a behaviour, optionally inverted (the non-matching stretches become the "matches").</summary>
internal sealed class SplitPreTokenizer(SplitPattern pattern, SplitBehavior behavior, bool invert) : PreTokenizerStep
{
    /// <summary>The pattern when every match is a piece of its own (Isolated, not inverted, covering), else null.</summary>
    public ICoveringPattern? Covering => behavior == SplitBehavior.Isolated && !invert ? pattern as ICoveringPattern : null;

    [ThreadStatic] private static List<(int, int)>? matchesScratch;
    [ThreadStatic] private static List<(int Start, int End, bool IsMatch)>? partsScratch;

    public override void Split(in Piece piece, List<Piece> output)
    {
        if (piece.Length == 0) return;
        var matches = matchesScratch ??= new List<(int, int)>();
        var parts = partsScratch ??= new List<(int, int, bool)>();
        matches.Clear();
        parts.Clear();
        int end = piece.Start + piece.Length;
        pattern.FindMatches(piece.Text, piece.Start, end, matches);
        int previous = piece.Start;
        foreach (var (s, e) in matches)
        {
            if (s > previous) parts.Add((previous, s, invert));
            parts.Add((s, e, !invert));
            previous = e;
        }
        if (previous < end) parts.Add((previous, end, invert));
        Emit(piece, parts, output);
    }

    private void Emit(in Piece piece, List<(int Start, int End, bool IsMatch)> parts, List<Piece> output)
    {
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var p in parts) Add(piece, p.Start, p.End, output);
                break;
            case SplitBehavior.Removed:
                foreach (var p in parts) if (!p.IsMatch) Add(piece, p.Start, p.End, output);
                break;
            case SplitBehavior.MergedWithPrevious:
            {
                // A match joins the part before it (a match right after a match stands alone).
                var merged = new List<(int Start, int End)>();
                bool previousMatch = false;
                foreach (var p in parts)
                {
                    if (p.IsMatch && !previousMatch && merged.Count > 0) merged[^1] = (merged[^1].Start, p.End);
                    else merged.Add((p.Start, p.End));
                    previousMatch = p.IsMatch;
                }
                foreach (var m in merged) Add(piece, m.Start, m.End, output);
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                // Walked from the end: a match joins the part after it.
                var merged = new List<(int Start, int End)>();
                bool previousMatch = false;
                for (int k = parts.Count - 1; k >= 0; k--)
                {
                    var p = parts[k];
                    if (p.IsMatch && !previousMatch && merged.Count > 0) merged[^1] = (p.Start, merged[^1].End);
                    else merged.Add((p.Start, p.End));
                    previousMatch = p.IsMatch;
                }
                for (int k = merged.Count - 1; k >= 0; k--) Add(piece, merged[k].Start, merged[k].End, output);
                break;
            }
            case SplitBehavior.Contiguous:
            {
                // Neighbouring parts of the same kind (match / non-match) are joined.
                var merged = new List<(int Start, int End)>();
                bool previousMatch = false;
                foreach (var p in parts)
                {
                    if (p.IsMatch == previousMatch && merged.Count > 0) merged[^1] = (merged[^1].Start, p.End);
                    else merged.Add((p.Start, p.End));
                    previousMatch = p.IsMatch;
                }
                foreach (var m in merged) Add(piece, m.Start, m.End, output);
                break;
            }
        }
    }

    private static void Add(in Piece piece, int start, int end, List<Piece> output)
    {
        if (end > start) output.Add(new Piece(piece.Text, start, end - start, piece.AtStart && start == piece.Start));
    }
}

/// <summary>
/// ByteLevel: optionally a space in front of each piece that does not start with one, optionally GPT-2's split.
/// The mapping of bytes to the byte-level alphabet is done by the model (it sees the piece's UTF-8 bytes).
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    /// <summary>True when this step leaves pieces as they are (no prefix space, no split).</summary>
    public bool PassesThrough => !addPrefixSpace && !useRegex;

    /// <summary>True when this step is exactly GPT-2's split (no prefix space).</summary>
    public bool SplitsOnly => !addPrefixSpace && useRegex;

    private static readonly SplitPreTokenizer Gpt2Split = new(new Gpt2Pattern(), SplitBehavior.Isolated, false);

    public override void Split(in Piece piece, List<Piece> output)
    {
        var p = piece;
        if (addPrefixSpace && (p.Length == 0 || p.Text[p.Start] != ' '))
        {
            if (p.Length == 0) return;
            p = new Piece(string.Concat(" ", p.Span), 0, p.Length + 1, p.AtStart);
        }
        if (useRegex) Gpt2Split.Split(p, output);
        else if (p.Length > 0) output.Add(p);
    }
}

/// <summary>Metaspace: spaces become the replacement character (U+2581), which is prepended by the scheme, then optionally split before each one.</summary>
internal sealed class MetaspacePreTokenizer(char replacement, string prependScheme, bool split) : PreTokenizerStep
{
    private readonly SplitPreTokenizer splitter = new(new LiteralPattern(replacement.ToString()), SplitBehavior.MergedWithNext, false);

    public override void Split(in Piece piece, List<Piece> output)
    {
        if (piece.Length == 0) return;
        var sb = new StringBuilder(piece.Length + 1);
        bool prepend = piece.Text[piece.Start] != ' ' && piece.Text[piece.Start] != replacement
            && (prependScheme == "always" || (prependScheme == "first" && piece.AtStart));
        if (prepend) sb.Append(replacement);
        sb.Append(piece.Span).Replace(' ', replacement);
        var p = new Piece(sb.ToString(), 0, sb.Length, piece.AtStart);
        if (split) splitter.Split(p, output);
        else output.Add(p);
    }
}

/// <summary>Digits: numbers split from the rest, each digit alone or in runs.</summary>
internal sealed class DigitsPreTokenizer(bool individualDigits) : PreTokenizerStep
{
    private readonly SplitPreTokenizer splitter = new(new CharClassPattern(Rune.IsNumber),
        individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous, false);

    public override void Split(in Piece piece, List<Piece> output) => splitter.Split(piece, output);
}

/// <summary>WhitespaceSplit: cuts at whitespace, which is dropped.</summary>
internal sealed class WhitespaceSplitPreTokenizer : PreTokenizerStep
{
    private readonly SplitPreTokenizer splitter = new(new CharClassPattern(Rune.IsWhiteSpace), SplitBehavior.Removed, false);

    public override void Split(in Piece piece, List<Piece> output) => splitter.Split(piece, output);
}

/// <summary>Sequence: each step applied to every piece the previous steps produced.</summary>
internal sealed class SequencePreTokenizer(PreTokenizerStep[] steps) : PreTokenizerStep
{
    public IReadOnlyList<PreTokenizerStep> Steps => steps;

    [ThreadStatic] private static Stack<List<Piece>>? pool;

    public override void Split(in Piece piece, List<Piece> output)
    {
        var stack = pool ??= new Stack<List<Piece>>();
        var current = stack.Count > 0 ? stack.Pop() : new List<Piece>();
        var next = stack.Count > 0 ? stack.Pop() : new List<Piece>();
        current.Clear();
        current.Add(piece);
        foreach (var step in steps)
        {
            next.Clear();
            foreach (var p in current) step.Split(p, next);
            (current, next) = (next, current);
        }
        output.AddRange(current);
        current.Clear();
        next.Clear();
        stack.Push(current);
        stack.Push(next);
    }
}
