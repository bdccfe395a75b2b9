using UioLlm.Model.Tokenizers;

namespace UioLlm.Training.Data.Synthetic;

/// <summary>
/// How long a prompt is: tokens of <c>Encode(prompt, addBos: true)</c> with a tokenizer (the length the
/// model reads), characters without one.
/// </summary>
public sealed class PromptLength(ITokenizer? tokenizer)
{
    /// <summary>"tokens" or "characters", for messages.</summary>
    public string Unit => tokenizer is null ? "characters" : "tokens";

    /// <summary>The length of <paramref name="prompt"/>.</summary>
    public int Of(string prompt) => tokenizer?.Encode(prompt, addBos: true).Length ?? prompt.Length;

    /// <summary>
    /// The largest n in [<paramref name="least"/>, <paramref name="most"/>] whose prompt fits in
    /// <paramref name="target"/>, and that prompt's length. Prompts grow with n; doubling finds an upper bound, bisection the rest.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Even n = <paramref name="least"/> exceeds the target.</exception>
    public (int Count, int Length) LargestFitting(Func<int, string> prompt, int least, int most, int target, string what)
    {
        int length = Of(prompt(least));
        if (length > target)
            throw new ArgumentOutOfRangeException(nameof(target), target, $"{what}: the shortest prompt is {length} {Unit}, above the target of {target}");
        int fits = least, step = 1;
        while (true)
        {
            if (fits == most) return (fits, length);
            int probe = (int)Math.Min((long)fits + step, most);
            int probeLength = Of(prompt(probe));
            if (probeLength > target)
            {
                step = probe - fits;
                break;
            }
            (fits, length, step) = (probe, probeLength, step * 2);
        }
        // fits fits; fits + step does not: bisect between them.
        int tooLong = fits + step;
        while (tooLong - fits > 1)
        {
            int middle = fits + (tooLong - fits) / 2;
            int middleLength = Of(prompt(middle));
            if (middleLength <= target) (fits, length) = (middle, middleLength);
            else tooLong = middle;
        }
        return (fits, length);
    }
}
