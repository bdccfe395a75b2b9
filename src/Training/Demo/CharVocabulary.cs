namespace UioLlm.Training.Demo;

/// <summary>
/// The demo's character-level vocabulary, built in code: id 0 is &lt;unk&gt;, 1 is BOS (&lt;s&gt;), 2 is EOS
/// (&lt;/s&gt;, which <see cref="UioLlm.Model.Uio.UioModel"/> copies into the &lt;mem&gt; embedding), then one id per
/// character: space, digits, lower- and upper-case letters, and a little punctuation. Any other character
/// encodes as &lt;unk&gt;.
/// </summary>
public sealed class CharVocabulary
{
    public const int UnkId = 0;
    public const int BosId = 1;
    public const int EosId = 2;
    private const int FirstCharId = 3;

    /// <summary>The characters with an id, in id order (from <see cref="FirstCharId"/>).</summary>
    public const string Characters = " 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,?!:;'-\n";

    private readonly int[] idOf = new int[128];

    public CharVocabulary()
    {
        Array.Fill(idOf, UnkId);
        for (int i = 0; i < Characters.Length; i++) idOf[Characters[i]] = FirstCharId + i;
    }

    /// <summary>Number of ids: the three special tokens plus one per character.</summary>
    public int VocabSize => FirstCharId + Characters.Length;

    /// <summary>The id of one character (&lt;unk&gt; when it has none).</summary>
    public int IdOf(char c) => c < idOf.Length ? idOf[c] : UnkId;

    /// <summary>One id per character of <paramref name="text"/>, optionally after BOS.</summary>
    public int[] Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new int[text.Length + (addBos ? 1 : 0)];
        int k = 0;
        if (addBos) ids[k++] = BosId;
        foreach (char c in text) ids[k++] = IdOf(c);
        return ids;
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
            if (id >= FirstCharId) text.Append(Characters[id - FirstCharId]);
            else if (id == UnkId) text.Append('\uFFFD');
        }
        return text.ToString();
    }
}
