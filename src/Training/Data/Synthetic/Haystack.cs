namespace UioLlm.Training.Data.Synthetic;

/// <summary>
/// Filler text as a cyclic list of non-empty units, each starting with whitespace (so units and needles
/// can be joined directly): one junk sentence repeated, or a book's words, each with the whitespace before it.
/// </summary>
public sealed class Haystack
{
    private readonly string[] units;

    private Haystack(string[] units, bool randomStart)
    {
        this.units = units;
        RandomStart = randomStart;
    }

    /// <summary>Distinct units before the list repeats.</summary>
    public int Period => units.Length;

    /// <summary>Whether a seed picks where in the list the filler starts (books) or it always starts at unit 0 (junk).</summary>
    public bool RandomStart { get; }

    /// <summary>The template's junk sentence repeated (llama.cpp's passkey filler).</summary>
    public static Haystack Repeat(string unit)
    {
        ArgumentException.ThrowIfNullOrEmpty(unit);
        return new Haystack([unit], randomStart: false);
    }

    /// <summary>
    /// A book's text (CRLF normalised to LF) cut before each word: unit k is the whitespace before word k
    /// plus the word (a single space before the first word). Sample filler starts at a seeded word.
    /// </summary>
    public static Haystack FromText(string text, string name)
    {
        ArgumentNullException.ThrowIfNull(text);
        var units = new List<string>();
        text = DocumentSource.NormaliseLineEnds(text);
        int i = 0;
        while (i < text.Length)
        {
            int wordStart = i;
            while (wordStart < text.Length && char.IsWhiteSpace(text[wordStart])) wordStart++;
            if (wordStart == text.Length) break;
            int wordEnd = wordStart;
            while (wordEnd < text.Length && !char.IsWhiteSpace(text[wordEnd])) wordEnd++;
            string space = wordStart > i ? text[i..wordStart] : " ";
            units.Add(space + text[wordStart..wordEnd]);
            i = wordEnd;
        }
        if (units.Count == 0) throw new ArgumentException($"haystack text {name} has no words", nameof(text));
        return new Haystack([.. units], randomStart: true);
    }

    /// <summary><see cref="FromText"/> on a file.</summary>
    public static Haystack FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"haystack text file not found: {path}", path);
        return FromText(File.ReadAllText(path), path);
    }

    /// <summary>Where a sample drawn with <paramref name="random"/> starts.</summary>
    public int Start(SeededRandom random) => RandomStart ? random.Next(units.Length) : 0;

    /// <summary>Unit <paramref name="i"/> counted from <paramref name="start"/>, wrapping around.</summary>
    public string Unit(int start, int i) => units[(int)(((long)start + i) % units.Length)];
}
