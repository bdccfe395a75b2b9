using UioLlm.Training.Data;

namespace UioLlm.Training.Demo;

/// <summary>
/// Pre-training drills that teach the demo's base an induction lookup densely: a random run of number tokens
/// ("412 739 105 ...", 6 to 25 of them) repeated until the window is full. From the second copy on, every
/// token is predictable only by finding the earlier occurrence of the current token and copying the token
/// that followed it -- the lookup that answers "What is the key? #" with the number after the earlier '#'.
/// Only the repeats are scored (the first copy is random). One such window trains the lookup at ~40 positions,
/// a passkey window at one.
/// </summary>
public sealed class InductionDrills(CharVocabulary vocabulary)
{
    /// <summary>Shortest and longest repeated run (tokens).</summary>
    public const int MinRun = 6, MaxRun = 25;

    private readonly CharVocabulary vocabulary = vocabulary ?? throw new ArgumentNullException(nameof(vocabulary));

    /// <summary>
    /// A drill of exactly <paramref name="tokens"/> tokens and its next-token targets (length tokens - 1, -100 where
    /// unscored), a function of <paramref name="seed"/> alone; BOS first half the time.
    /// </summary>
    public (int[] Tokens, int[] Targets) Drill(long seed, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 2);
        var random = new SeededRandom(seed, stream: 23);
        int run = MinRun + random.Next(MaxRun - MinRun + 1);
        var numbers = new int[run];
        for (int i = 0; i < run; i++) numbers[i] = vocabulary.NumberId(100 + random.Next(900));
        var ids = new int[tokens];
        int start = random.Next(2) == 0 ? 1 : 0;
        if (start == 1) ids[0] = CharVocabulary.BosId;
        for (int i = start; i < tokens; i++) ids[i] = numbers[(i - start) % run];
        var targets = new int[tokens - 1];
        // Target i is token i + 1, scored from the second token of the second copy on: only then has the current
        // token been seen before, followed by the answer.
        for (int i = 0; i < targets.Length; i++) targets[i] = i + 1 > start + run ? ids[i + 1] : -100;
        return (ids, targets);
    }
}
