using System.Text;
using System.Text.RegularExpressions;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Tests.Tokenizers;

public class Gpt2PreTokenizerTests
{
    private static readonly Regex Gpt2Regex = new(Gpt2PreTokenizer.Pattern, RegexOptions.CultureInvariant);

    [Fact]
    public void KnownSplits()
    {
        Assert.Equal(["Hello", ",", " world", "!"], Pieces("Hello, world!"));
        Assert.Equal(["I", "'ve", " been", " '", "told", " he", "'s"], Pieces("I've been 'told he's"));
        Assert.Equal(["  ", " Hello"], Pieces("   Hello"));
        Assert.Equal([" ", "\t", "a"], Pieces(" \ta"));
        Assert.Equal(["\n", " =", "  "], Pieces("\n =  "));
        Assert.Equal(["3", " 333", "'", "RE"], Pieces("3 333'RE"));
        Assert.Equal([" 🦙", " x"], Pieces(" 🦙 x"));
    }

    [Fact]
    public void MatchesTheRegexOnRandomText()
    {
        var rng = new Random(3);
        for (int trial = 0; trial < 2000; trial++)
        {
            string text = RandomBmpAndEmojiText(rng);
            Assert.Equal(RegexPieces(text), Pieces(text));
        }
    }

    [Fact]
    public void SupplementaryLettersAndDigitsCountByCodePoint()
    {
        // .NET's Regex sees UTF-16 surrogates as "other"; the reference tokenizers (Python regex, tiktoken) see code
        // points. Replacing each supplementary letter by two BMP letters (digit by two digits) keeps the split points,
        // so the regex on the stand-in text is the code-point reference.
        var rng = new Random(9);
        string[] supplementary = ["𝐀", "𝐳", "𠀀", "𐌰", "𝟘", "𝟡", "🦙", "😀"];
        for (int trial = 0; trial < 1000; trial++)
        {
            var text = new StringBuilder();
            var standIn = new StringBuilder();
            int parts = rng.Next(1, 12);
            for (int i = 0; i < parts; i++)
            {
                string s = rng.Next(2) == 0 ? supplementary[rng.Next(supplementary.Length)] : RandomBmpAndEmojiText(rng, 3);
                text.Append(s);
                standIn.Append(s switch { "𝐀" or "𝐳" or "𠀀" or "𐌰" => "aa", "𝟘" or "𝟡" => "00", _ => s });
            }
            Assert.Equal(RegexRanges(standIn.ToString()), Gpt2PreTokenizer.Split(text.ToString()).Select(r => r.GetOffsetAndLength(text.Length)));
        }
        Assert.Equal([" 𝐀𝐁"], Pieces(" 𝐀𝐁"));
    }

    private static string[] Pieces(string text) =>
        Gpt2PreTokenizer.Split(text).Select(r => text[r]).ToArray();

    private static string[] RegexPieces(string text) =>
        Gpt2Regex.Matches(text).Select(m => m.Value).ToArray();

    private static IEnumerable<(int, int)> RegexRanges(string text) =>
        Gpt2Regex.Matches(text).Select(m => (m.Index, m.Length)).ToArray();

    /// <summary>Characters drawn from every class the pattern distinguishes, BMP only plus emoji (not letters or digits).</summary>
    private static string RandomBmpAndEmojiText(Random rng, int maxLength = 40)
    {
        string[] atoms =
        [
            "a", "Z", "é", "ß", "Ж", "中", "ก", "\u0301", "\u093F", "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'x",
            "0", "7", "½", "²", "٣", "Ⅻ", " ", " ", " ", "  ", "\t", "\n", "\r", "\v", "\f", "\u0085", "\u00A0", "\u2028", "\u3000",
            "\u1680", "\u200B", "\u001C", ".", ",", "!", "-", "$", "€", "\u00AD", "\u0000", "🦙", "😶\u200d🌫️", "\uD800x", "\uDC00", // lone surrogates never pair up
        ];
        var sb = new StringBuilder();
        int n = rng.Next(0, maxLength);
        for (int i = 0; i < n; i++) sb.Append(atoms[rng.Next(atoms.Length)]);
        return sb.ToString();
    }
}
