using System.Text;
using System.Text.RegularExpressions;

namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>
/// A tokenizer.json normalizer. Only the text matters here (ids, not offsets), so each one is a plain string
/// transform applied to one piece of input between added tokens.
/// </summary>
internal abstract class TextNormalizer
{
    public abstract string Normalize(string text);
}

/// <summary>NFC, NFD, NFKC, NFKD (Unicode normalization forms), through <see cref="UnicodeNormalization"/>.</summary>
internal sealed class UnicodeNormalizer(NormalizationForm form) : TextNormalizer
{
    public override string Normalize(string text)
    {
        // ASCII is normalized in every form.
        if (System.Text.Ascii.IsValid(text)) return text;
        return UnicodeNormalization.Normalize(text, form);
    }
}

/// <summary>Lowercase: Unicode lower case of every character (invariant culture).</summary>
internal sealed class LowercaseNormalizer : TextNormalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>Strip: removes whitespace at the left and/or right end.</summary>
internal sealed class StripNormalizer(bool left, bool right) : TextNormalizer
{
    public override string Normalize(string text)
    {
        int start = 0, end = text.Length;
        if (left) while (start < end && char.IsWhiteSpace(text[start])) start++;
        if (right) while (end > start && char.IsWhiteSpace(text[end - 1])) end--;
        return start == 0 && end == text.Length ? text : text[start..end];
    }
}

/// <summary>Prepend: puts a string in front of non-empty text.</summary>
internal sealed class PrependNormalizer(string prefix) : TextNormalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : string.Concat(prefix, text);
}

/// <summary>Replace: every occurrence of a literal string or of a regex, by a literal string.</summary>
internal sealed class ReplaceNormalizer : TextNormalizer
{
    private readonly string? literal;
    private readonly Regex? regex;
    private readonly string content;

    public ReplaceNormalizer(string? literal, Regex? regex, string content)
    {
        this.literal = literal;
        this.regex = regex;
        this.content = content;
    }

    public override string Normalize(string text)
    {
        if (literal is not null) return literal.Length == 0 ? text : text.Replace(literal, content, StringComparison.Ordinal);
        return regex!.Replace(text, content.Replace("$", "$$", StringComparison.Ordinal));
    }
}

/// <summary>Sequence: the normalizers in order.</summary>
internal sealed class SequenceNormalizer(TextNormalizer[] steps) : TextNormalizer
{
    public override string Normalize(string text)
    {
        foreach (var step in steps) text = step.Normalize(text);
        return text;
    }
}
