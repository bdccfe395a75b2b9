using System.Text;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Training.Data.Synthetic;

/// <summary>One passkey prompt.</summary>
/// <param name="Prompt">Prefix, filler with the needle inside, suffix (the model continues it with the key).</param>
/// <param name="Answer">The passkey digits.</param>
/// <param name="NeedleOffset">Character offset of the needle in <paramref name="Prompt"/>.</param>
/// <param name="Needle">The needle text inserted.</param>
/// <param name="FillerUnits">n, the filler units in the prompt.</param>
/// <param name="UnitsBeforeNeedle">i_pos, the filler units before the needle.</param>
/// <param name="Length">The prompt's length in tokens (with BOS) or characters, at most the target.</param>
public sealed record PasskeySample(string Prompt, string Answer, int NeedleOffset, string Needle, int FillerUnits, int UnitsBeforeNeedle, int Length)
{
    /// <summary>The needle's actual depth: i_pos / n (0 without filler).</summary>
    public double Depth => FillerUnits == 0 ? 0 : (double)UnitsBeforeNeedle / FillerUnits;
}

/// <summary>
/// Passkey retrieval (llama.cpp's passkey rule): prompt = prefix + filler units with the needle before
/// unit i_pos = round(depth * n) + suffix, n as large as fits the length target. The passkey and (for a
/// book haystack) the filler's starting word come from the seed alone, so a seed gives the same key at
/// every length and depth.
/// </summary>
public sealed class PasskeyTask
{
    private readonly PasskeyTemplate template;
    private readonly Haystack haystack;
    private readonly PromptLength length;

    /// <summary>A task with <paramref name="template"/>'s strings.</summary>
    /// <param name="template">Prefix, needle and suffix (and the junk unit when no haystack is given).</param>
    /// <param name="haystack">The filler; null repeats the template's junk unit.</param>
    /// <param name="tokenizer">Measures length targets in tokens; null measures characters.</param>
    public PasskeyTask(PasskeyTemplate template, Haystack? haystack = null, ITokenizer? tokenizer = null)
    {
        ArgumentNullException.ThrowIfNull(template);
        this.template = template;
        this.haystack = haystack ?? Haystack.Repeat(template.JunkUnit);
        length = new PromptLength(tokenizer);
    }

    /// <summary>The prompt for <paramref name="seed"/> with the needle at <paramref name="depth"/> of the filler.</summary>
    /// <param name="seed">Chooses the passkey and the filler start.</param>
    /// <param name="targetLength">Most tokens (with a tokenizer) or characters of the prompt.</param>
    /// <param name="depth">Fraction of the filler before the needle, in [0, 1].</param>
    /// <param name="digits">Digits of the passkey (the first is never 0).</param>
    public PasskeySample Generate(long seed, int targetLength, double depth, int digits = 5)
    {
        if (!(depth >= 0 && depth <= 1)) throw new ArgumentOutOfRangeException(nameof(depth), depth, "depth must lie in [0, 1]");
        ArgumentOutOfRangeException.ThrowIfLessThan(digits, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(digits, 18);
        var random = new SeededRandom(seed, stream: 1);
        string passkey = Passkey(random, digits);
        int start = haystack.Start(random);
        string needle = template.Needle(passkey);

        var (units, promptLength) = length.LargestFitting(n => Build(n, NeedleUnit(n, depth), start, needle).Prompt, 0, int.MaxValue, targetLength, "passkey");
        int before = NeedleUnit(units, depth);
        var (prompt, offset) = Build(units, before, start, needle);
        return new PasskeySample(prompt, passkey, offset, needle, units, before, promptLength);
    }

    private static int NeedleUnit(int units, double depth) => (int)Math.Round(depth * units, MidpointRounding.AwayFromZero);

    private static string Passkey(SeededRandom random, int digits)
    {
        var key = new StringBuilder(digits);
        key.Append((char)('1' + random.Next(9)));
        for (int i = 1; i < digits; i++) key.Append((char)('0' + random.Next(10)));
        return key.ToString();
    }

    /// <summary>prefix + units[0..before) + needle + units[before..n) + suffix, and where the needle starts.</summary>
    private (string Prompt, int NeedleOffset) Build(int units, int before, int start, string needle)
    {
        var prompt = new StringBuilder(template.Prefix);
        int offset = -1;
        for (int i = 0; i <= units; i++)
        {
            if (i == before)
            {
                offset = prompt.Length;
                prompt.Append(needle);
            }
            if (i < units) prompt.Append(haystack.Unit(start, i));
        }
        prompt.Append(template.Suffix);
        return (prompt.ToString(), offset);
    }
}
