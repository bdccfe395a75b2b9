namespace UioLlm.Training.Demo;

/// <summary>
/// The demo's vocabulary, built in code: id 0 is &lt;unk&gt;, 1 is BOS (&lt;s&gt;), 2 is EOS (&lt;/s&gt;, which
/// <see cref="UioLlm.Model.Uio.UioModel"/> copies into the &lt;mem&gt; embedding), then one id per character
/// (space, digits, lower- and upper-case letters, a little punctuation), then one id per three-digit number
/// "000".."999". Digits are tokenized as Llama 3's tokenizer does, in chunks of up to three from the left:
/// "73914" is the number token "739" then the characters "1" and "4". Any other character is &lt;unk&gt;.
/// </summary>
public sealed class CharVocabulary
{
    public const int UnkId = 0;
    public const int BosId = 1;
    public const int EosId = 2;
    private const int FirstCharId = 3;

    /// <summary>The characters with an id, in id order (from id 3).</summary>
    public const string Characters = " 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,?!:;'-#\n";

    private static readonly int FirstNumberId = FirstCharId + Characters.Length;
    private readonly int[] idOf = new int[128];

    public CharVocabulary()
    {
        Array.Fill(idOf, UnkId);
        for (int i = 0; i < Characters.Length; i++) idOf[Characters[i]] = FirstCharId + i;
    }

    /// <summary>Number of ids: three special tokens, one per character, one per three-digit number.</summary>
    public int VocabSize => FirstNumberId + 1000;

    /// <summary>The single token of the three-digit number <paramref name="number"/> (0 to 999; "007" is 7).</summary>
    public int NumberId(int number)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(number);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(number, 999);
        return FirstNumberId + number;
    }

    /// <summary>The id of one character (&lt;unk&gt; when it has none).</summary>
    public int IdOf(char c) => c < idOf.Length ? idOf[c] : UnkId;

    /// <summary>Tokens of a run of <paramref name="digits"/> digits: one per full chunk of three, one per digit left over.</summary>
    public static int DigitTokens(int digits) => digits / 3 + digits % 3;

    /// <summary>The ids of <paramref name="text"/>, optionally after BOS.</summary>
    public int[] Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length + 1);
        if (addBos) ids.Add(BosId);
        for (int i = 0; i < text.Length;)
        {
            if (!char.IsAsciiDigit(text[i]))
            {
                ids.Add(IdOf(text[i++]));
                continue;
            }
            int end = i;
            while (end < text.Length && char.IsAsciiDigit(text[end])) end++;
            for (; end - i >= 3; i += 3)
                ids.Add(FirstNumberId + (text[i] - '0') * 100 + (text[i + 1] - '0') * 10 + (text[i + 2] - '0'));
            for (; i < end; i++) ids.Add(IdOf(text[i]));
        }
        return ids.ToArray();
    }

    /// <summary>The text of ids: BOS and EOS print nothing, &lt;unk&gt; prints U+FFFD.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id lies outside [0, <see cref="VocabSize"/>).</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var text = new System.Text.StringBuilder(ids.Length);
        foreach (int id in ids)
        {
            if (id < 0 || id >= VocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"CharVocabulary: id {id} is outside [0, {VocabSize})");
            if (id >= FirstNumberId) text.Append((id - FirstNumberId).ToString("000", System.Globalization.CultureInfo.InvariantCulture));
            else if (id >= FirstCharId) text.Append(Characters[id - FirstCharId]);
            else if (id == UnkId) text.Append('\uFFFD');
        }
        return text.ToString();
    }
}
