using System.Text;
using Microsoft.ML.Tokenizers;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Tokenizers;

/// <summary>
/// Differential tests: our tokenizers against an independent implementation (Microsoft.ML.Tokenizers 3.0.0, a
/// test-only dependency) on generated strings: random Unicode (BMP and astral), runs of whitespace and
/// punctuation, emoji (with ZWJ sequences and flags), digits, contractions, and characters that only byte
/// fallback can encode.
/// </summary>
public class DifferentialTokenizerTests
{
    private static readonly string[] Pieces =
    [
        " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "   \n ", "!", "?!", "...", "--", "\"", "'", "(", ")", ",", ";", "#", "@",
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "0", "42", "2026", "3.14", "the", "The", " whale", "Ishmael", "ing", "tion",
        "\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F1EB\U0001F1F7", "\u2764\uFE0F",
        "\u00e9", "e\u0301", "\u00fc", "\u00df", "\u0416", "\u03a9", "\u4e2d\u6587", "\u65e5\u672c", "\ud55c", "\u0627\u0644", "\u05e9",
        "\u0e01", "\u2581", "\u2047", "\uFFFD", "<s>", "</s>", "<unk>", "\u00ad", "\u200b",
    ];

    /// <summary>Deterministic strings mixing the pieces above with random code points.</summary>
    public static IEnumerable<string> Strings(int count, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            var sb = new StringBuilder();
            int parts = 1 + rng.Next(12);
            for (int p = 0; p < parts; p++)
            {
                switch (rng.Next(6))
                {
                    case 0: // a random code point, BMP or astral, never a lone surrogate
                        int cp;
                        do cp = rng.Next(4) == 0 ? rng.Next(0x10000, 0x1FAFF) : rng.Next(0x20, 0xFFFD);
                        while (cp is >= 0xD800 and <= 0xDFFF);
                        sb.Append(char.ConvertFromUtf32(cp));
                        break;
                    case 1: // an ASCII word
                        for (int n = 1 + rng.Next(8); n > 0; n--) sb.Append((char)('a' + rng.Next(26)));
                        break;
                    default:
                        sb.Append(Pieces[rng.Next(Pieces.Length)]);
                        break;
                }
            }
            yield return sb.ToString();
        }
    }

    /// <summary>
    /// GPT-2 byte-level BPE. Microsoft.ML.Tokenizers 3.0.0 runs GPT-2's split pattern with .NET's regex, which
    /// sees a character outside the BMP as two surrogates (category Cs), so an astral letter or digit
    /// (e.g. U+14460, U+1D7D8) falls into the punctuation class instead of \p{L} / \p{N} as in GPT-2's own
    /// (Python, code-point) regex, which ours follows. And its byte-level BPE reader (CodeGenTokenizer) adds
    /// CodeGen's own tokens for runs of 2+ spaces or tabs (ids 50257+, absent from GPT-2, which spells such runs
    /// with the single-space token). Strings with either are counted, not compared; everything else (emoji,
    /// newline and punctuation runs, contractions, BMP scripts, single spaces) must agree id for id.
    /// </summary>
    [DataFact]
    public void Gpt2ByteLevelBpeAgreesWithMicrosoftMlTokenizers()
    {
        string encoder = TestData.File("tokenizers", "gpt2", "encoder.json"), merges = TestData.File("tokenizers", "gpt2", "vocab.bpe");
        var ours = UioLlm.Model.Tokenizers.Tokenizer.Load(encoder);
        Microsoft.ML.Tokenizers.Tokenizer reference;
        using (var vocab = File.OpenRead(encoder))
        using (var mergeStream = File.OpenRead(merges))
            reference = CodeGenTokenizer.Create(vocab, mergeStream, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
        int compared = 0, skipped = 0;
        foreach (string text in Strings(400, seed: 11))
        {
            if (HasAstralLetterOrDigit(text) || text.Contains("  ", StringComparison.Ordinal) || text.Contains("\t\t", StringComparison.Ordinal)
                || text.Contains(" \t", StringComparison.Ordinal) || text.Contains("\t ", StringComparison.Ordinal)) { skipped++; continue; }
            var expected = reference.EncodeToIds(text);
            var actual = ours.Encode(text, addBos: false);
            Assert.True(expected.SequenceEqual(actual), $"'{Escape(text)}': Microsoft.ML.Tokenizers [{string.Join(' ', expected)}], ours [{string.Join(' ', actual)}]");
            Assert.Equal(text, ours.Decode(actual));
            compared++;
        }
        Assert.True(compared > 3 * skipped, $"{compared} compared, {skipped} with astral letters or digits");
    }

    private static bool HasAstralLetterOrDigit(string text) => text.EnumerateRunes().Any(r => r.Value > 0xFFFF &&
        Rune.GetUnicodeCategory(r) is System.Globalization.UnicodeCategory.UppercaseLetter or System.Globalization.UnicodeCategory.LowercaseLetter
            or System.Globalization.UnicodeCategory.TitlecaseLetter or System.Globalization.UnicodeCategory.ModifierLetter
            or System.Globalization.UnicodeCategory.OtherLetter or System.Globalization.UnicodeCategory.DecimalDigitNumber
            or System.Globalization.UnicodeCategory.LetterNumber or System.Globalization.UnicodeCategory.OtherNumber);

    /// <summary>
    /// The Llama-2 SentencePiece BPE model. Microsoft.ML.Tokenizers 3.0.0's LlamaTokenizer merges pairs of equal
    /// score right to left where SentencePiece goes left to right, so the two differ on runs of a repeated unit
    /// ("!!!!!!", "aaaa", "abababab": the same pair overlaps itself, every candidate has the same score).
    /// Strings without such a run are decided by the score order alone, and there the two must agree exactly;
    /// strings with one are counted, and must stay the minority of the sample.
    /// </summary>
    [DataFact]
    public void LlamaSentencePieceAgreesWithMicrosoftMlTokenizersWhereTheScoresDecide()
    {
        string model = TestData.File("tokenizers", "llama2", "tokenizer.model");
        var ours = UioLlm.Model.Tokenizers.Tokenizer.Load(model);
        Microsoft.ML.Tokenizers.Tokenizer reference;
        using (var stream = File.OpenRead(model))
            reference = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        int compared = 0, skipped = 0;
        foreach (string text in Strings(400, seed: 12))
        {
            if (HasTandemRepeat(text)) { skipped++; continue; }
            var expected = reference.EncodeToIds(text);
            var actual = ours.Encode(text, addBos: false);
            Assert.True(expected.SequenceEqual(actual), $"'{Escape(text)}': Microsoft.ML.Tokenizers [{string.Join(' ', expected)}], ours [{string.Join(' ', actual)}]");
            compared++;
        }
        Assert.True(compared > 3 * skipped, $"{compared} compared, {skipped} with repeated runs");
    }

    /// <summary>True when some unit of 1-4 characters occurs three or more times in a row (where tie order matters).</summary>
    internal static bool HasTandemRepeat(string text)
    {
        for (int unit = 1; unit <= 4; unit++)
            for (int i = 0; i + 3 * unit <= text.Length; i++)
                if (string.CompareOrdinal(text, i, text, i + unit, unit) == 0 && string.CompareOrdinal(text, i, text, i + 2 * unit, unit) == 0)
                    return true;
        return false;
    }

    private static string Escape(string s)
    {
        var sb = new StringBuilder();
        foreach (var r in s.EnumerateRunes()) sb.Append(r.Value is >= 0x20 and < 0x7F ? ((char)r.Value).ToString() : $"\\u{{{r.Value:X}}}");
        return sb.ToString();
    }
}
