using UioLlm.Training.Data;

namespace UioLlm.Training.Demo;

/// <summary>
/// Pre-training drills that teach the demo's base an induction-style lookup: a window of key-value pairs
/// "k412 a739 k412 x105 a739 ..." where each key (a letter) keeps one value (a three-digit number token) within
/// the window and pairs repeat. Every repeated value is predictable only by finding the earlier occurrence of
/// its key and copying the token that followed it -- the same lookup that answers "What is the key? #" with
/// the number after the earlier '#'. Scored on every token.
/// </summary>
public sealed class RecallDrills(CharVocabulary vocabulary)
{
    private const string Keys = "abcdefghijklmnopqrstuvwxyz";
    private readonly CharVocabulary vocabulary = vocabulary ?? throw new ArgumentNullException(nameof(vocabulary));

    /// <summary>A drill of exactly <paramref name="tokens"/> tokens, a function of <paramref name="seed"/> alone; BOS first half the time.</summary>
    public int[] Drill(long seed, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        var random = new SeededRandom(seed, stream: 21);
        int pairs = 4 + random.Next(8);
        // Distinct keys, one value each.
        var keys = new char[pairs];
        var pool = Keys.ToCharArray();
        random.Shuffle(pool.AsSpan());
        pool.AsSpan(0, pairs).CopyTo(keys);
        var values = new int[pairs];
        for (int i = 0; i < pairs; i++) values[i] = 100 + random.Next(900);
        var ids = new List<int>(tokens + 3);
        if (random.Next(2) == 0) ids.Add(CharVocabulary.BosId);
        while (ids.Count < tokens)
        {
            int j = random.Next(pairs);
            ids.AddRange(vocabulary.Encode(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{keys[j]}{values[j]} ")));
        }
        return ids.GetRange(0, tokens).ToArray();
    }
}
