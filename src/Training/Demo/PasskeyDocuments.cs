using System.Text;
using UioLlm.Training.Data;

namespace UioLlm.Training.Demo;

/// <summary>
/// One passkey document in the demo's character vocabulary: [BOS] filler, the needle
/// ("The key is #739. "), more filler, the question ("What is the key? #") and
/// the key's digits as the answer, which end the document.
/// </summary>
/// <param name="Tokens">The whole document, answer included.</param>
/// <param name="Key">The passkey digits.</param>
/// <param name="NeedleOffset">Token index where the needle starts.</param>
public sealed record PasskeyDocument(int[] Tokens, string Key, int NeedleOffset)
{
    /// <summary>Tokens of the answer (the key), which end the document.</summary>
    public int AnswerTokens => CharVocabulary.DigitTokens(Key.Length);

    /// <summary>Tokens before the answer: what a model reads before it must produce the key.</summary>
    public ReadOnlySpan<int> Prompt => Tokens.AsSpan(0, Tokens.Length - AnswerTokens);

    /// <summary>Token index of the key's first digit inside the needle.</summary>
    public int KeyOffset => NeedleOffset + PasskeyDocuments.NeedlePrefix.Length;
}

/// <summary>
/// Seeded passkey documents for the demo (no files): filler sentences drawn from a fixed list by a
/// <see cref="SeededRandom"/>, a random key, and the needle at a chosen token offset. Every document is a
/// function of its seed and layout alone.
/// </summary>
public sealed class PasskeyDocuments
{
    public const string NeedlePrefix = "The key is #";
    public const string QuestionText = "What is the key? #";

    private static readonly string[] Sentences =
    [
        "The grass is green. ", "The sky is blue. ", "The sun is yellow. ", "Here we go. ", "There and back again. ",
        "The river runs to the sea. ", "Birds sing in the morning. ", "The road is long and quiet. ",
    ];

    /// <summary>
    /// Filler sentences with a random three-digit number each (drawn anew at every use) in place of "{0}": with
    /// them the key is not the only number in a document, so a model must find the number that follows '#'.
    /// </summary>
    private static readonly string[] NumberSentences =
    [
        "Room {0} is open. ", "Bus {0} runs late. ", "We saw {0} birds. ", "Page {0} is torn. ",
    ];

    private readonly CharVocabulary vocabulary;

    /// <param name="keyDigits">Digits per key (the first is never 0).</param>
    /// <param name="distractorShare">Share of filler sentences that hold a random number (see <see cref="Filler(SeededRandom, int, double)"/>); 0: none.</param>
    public PasskeyDocuments(CharVocabulary vocabulary, int keyDigits = 5, double distractorShare = 0)
    {
        if (!(distractorShare >= 0 && distractorShare <= 1)) throw new ArgumentOutOfRangeException(nameof(distractorShare), distractorShare, "PasskeyDocuments: the distractor share must lie in [0, 1]");
        DistractorShare = distractorShare;
        ArgumentNullException.ThrowIfNull(vocabulary);
        if (keyDigits is < 1 or > 18) throw new ArgumentOutOfRangeException(nameof(keyDigits), keyDigits, "PasskeyDocuments: a key has 1 to 18 digits");
        this.vocabulary = vocabulary;
        KeyDigits = keyDigits;
    }

    public int KeyDigits { get; }

    /// <summary>Share of filler sentences holding a distractor number (0: the key is the only number).</summary>
    public double DistractorShare { get; }

    /// <summary>The question that precedes the answer.</summary>
    public string Question => QuestionText;

    /// <summary>Tokens of the key (three digits make one token).</summary>
    public int KeyTokens => CharVocabulary.DigitTokens(KeyDigits);

    /// <summary>Tokens of the needle ("The key is #739. ").</summary>
    public int NeedleLength => NeedlePrefix.Length + KeyTokens + 2;

    /// <summary>Tokens that are not filler in a document: needle, question and answer (plus BOS when present).</summary>
    public int FixedLength(bool bos) => (bos ? 1 : 0) + NeedleLength + QuestionText.Length + KeyTokens;

    /// <summary>Exactly <paramref name="characters"/> characters of filler sentences in a seeded order.</summary>
    public static string Filler(SeededRandom random, int characters) => Filler(random, characters, 0);

    /// <summary>
    /// Filler sentences in a seeded order worth exactly <paramref name="characters"/> tokens of the demo's
    /// vocabulary (one per character, one per three-digit number). A share <paramref name="distractorShare"/> of
    /// the sentences carries a random number from 100 to 999 (a single token); with 0 the text has no digit and
    /// its length is <paramref name="characters"/>.
    /// </summary>
    public static string Filler(SeededRandom random, int characters, double distractorShare)
    {
        ArgumentNullException.ThrowIfNull(random);
        ArgumentOutOfRangeException.ThrowIfNegative(characters);
        var text = new StringBuilder(characters + 32);
        int tokens = 0;
        while (tokens < characters)
        {
            bool number = distractorShare > 0 && random.NextDouble() < distractorShare;
            string sentence = number
                ? string.Format(System.Globalization.CultureInfo.InvariantCulture, NumberSentences[random.Next(NumberSentences.Length)], 100 + random.Next(900))
                : Sentences[random.Next(Sentences.Length)];
            // Append token by token (a number is one token) until the count is reached.
            for (int i = 0; i < sentence.Length && tokens < characters; tokens++)
            {
                int width = char.IsAsciiDigit(sentence[i]) ? 3 : 1;
                text.Append(sentence, i, width);
                i += width;
            }
        }
        return text.ToString();
    }

    /// <summary>A random key of <see cref="KeyDigits"/> digits.</summary>
    public string NewKey(SeededRandom random) => NewKey(random, KeyDigits);

    private static string NewKey(SeededRandom random, int digits)
    {
        ArgumentNullException.ThrowIfNull(random);
        var key = new StringBuilder(digits);
        key.Append((char)('1' + random.Next(9)));
        for (int i = 1; i < digits; i++) key.Append((char)('0' + random.Next(10)));
        return key.ToString();
    }

    /// <summary>
    /// A document of exactly <paramref name="totalTokens"/> tokens (answer included) with the needle starting
    /// at token <paramref name="needleOffset"/>; the key and the filler come from <paramref name="random"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The needle does not fit between the start and the question.</exception>
    /// <param name="keyDigits">Digits of this document's key (default: <see cref="KeyDigits"/>).</param>
    public PasskeyDocument Compose(SeededRandom random, int totalTokens, int needleOffset, bool bos, int? keyDigits = null)
    {
        ArgumentNullException.ThrowIfNull(random);
        int digits = keyDigits ?? KeyDigits;
        if (digits is < 1 or > 18) throw new ArgumentOutOfRangeException(nameof(keyDigits), digits, "PasskeyDocuments: a key has 1 to 18 digits");
        int start = bos ? 1 : 0;
        int extra = 2 * (CharVocabulary.DigitTokens(digits) - KeyTokens);
        int after = totalTokens - FixedLength(bos) - extra - (needleOffset - start);
        if (needleOffset < start || after < 0)
            throw new ArgumentOutOfRangeException(nameof(needleOffset), needleOffset,
                $"PasskeyDocuments: a needle at token {needleOffset} does not fit a document of {totalTokens} tokens (it must lie in [{start}, {MaxNeedleOffset(totalTokens, bos) - extra}])");
        string key = NewKey(random, digits);
        var text = new StringBuilder(totalTokens);
        text.Append(Filler(random, needleOffset - start, DistractorShare));
        text.Append(NeedlePrefix).Append(key).Append(". ");
        text.Append(Filler(random, after, DistractorShare));
        text.Append(QuestionText).Append(key);
        var tokens = vocabulary.Encode(text.ToString(), addBos: bos);
        if (tokens.Length != totalTokens) throw new InvalidOperationException($"PasskeyDocuments: composed {tokens.Length} tokens, expected {totalTokens}");
        return new PasskeyDocument(tokens, key, needleOffset);
    }

    /// <summary>The last token offset at which a needle still fits in a document of <paramref name="totalTokens"/>.</summary>
    public int MaxNeedleOffset(int totalTokens, bool bos) => totalTokens - FixedLength(bos) + (bos ? 1 : 0);

    /// <summary>
    /// An evaluation document (with BOS) of <paramref name="totalTokens"/> tokens whose needle sits at
    /// <paramref name="depth"/> of the filler (0: right after BOS, 1: right before the question).
    /// </summary>
    public PasskeyDocument AtDepth(long seed, int totalTokens, double depth)
    {
        if (!(depth >= 0 && depth <= 1)) throw new ArgumentOutOfRangeException(nameof(depth), depth, "PasskeyDocuments: depth must lie in [0, 1]");
        int max = MaxNeedleOffset(totalTokens, bos: true);
        if (max < 1) throw new ArgumentOutOfRangeException(nameof(totalTokens), totalTokens, $"PasskeyDocuments: {totalTokens} tokens cannot hold a needle, the question and the answer ({FixedLength(true)} tokens)");
        int offset = 1 + (int)Math.Round(depth * (max - 1), MidpointRounding.AwayFromZero);
        return Compose(new SeededRandom(seed, stream: 11), totalTokens, offset, bos: true);
    }

    /// <summary>
    /// A document with the needle at a uniformly drawn offset in [<paramref name="minOffset"/>,
    /// <paramref name="maxOffset"/>] (clamped to where it fits).
    /// </summary>
    public PasskeyDocument Random(long seed, int totalTokens, int minOffset, int maxOffset, bool bos, int? keyDigits = null)
    {
        var random = new SeededRandom(seed, stream: 12);
        int extra = 2 * (CharVocabulary.DigitTokens(keyDigits ?? KeyDigits) - KeyTokens);
        int lo = Math.Max(minOffset, bos ? 1 : 0), hi = Math.Min(maxOffset, MaxNeedleOffset(totalTokens, bos) - extra);
        if (hi < lo) throw new ArgumentOutOfRangeException(nameof(maxOffset), maxOffset, $"PasskeyDocuments: no needle offset in [{minOffset}, {maxOffset}] fits {totalTokens} tokens");
        return Compose(random, totalTokens, lo + random.Next(hi - lo + 1), bos, keyDigits);
    }
}
