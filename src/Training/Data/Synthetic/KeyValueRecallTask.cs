using System.Text;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Training.Data.Synthetic;

/// <summary>The shape of a random hex string: group lengths joined by '-' (e.g. 8-4-4-4-12, UUID-like).</summary>
public sealed class HexShape
{
    private readonly int[] groups;

    /// <summary>A shape with these group lengths (each at least 1).</summary>
    public HexShape(params int[] groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        if (groups.Length == 0 || groups.Any(g => g < 1)) throw new ArgumentException("hex shape needs one or more groups of at least one digit", nameof(groups));
        this.groups = [.. groups];
    }

    /// <summary>How many distinct strings the shape has (capped at int.MaxValue).</summary>
    public int MaxDistinct => groups.Sum() >= 8 ? int.MaxValue : 1 << (4 * groups.Sum());

    /// <summary>8-4-4-4-12, as a UUID.</summary>
    public static HexShape Uuid { get; } = new(8, 4, 4, 4, 12);

    /// <summary>A random string of this shape (lower-case hex).</summary>
    public string Draw(SeededRandom random)
    {
        var text = new StringBuilder();
        foreach (int g in groups)
        {
            if (text.Length > 0) text.Append('-');
            for (int i = 0; i < g; i++) text.Append("0123456789abcdef"[random.Next(16)]);
        }
        return text.ToString();
    }

    public override string ToString() => string.Join('-', groups);
}

/// <summary>One key-value recall prompt.</summary>
/// <param name="Prompt">Instruction, the pairs one per line, then the question (the model continues with the value).</param>
/// <param name="Answer">The queried key's value.</param>
/// <param name="Key">The queried key.</param>
/// <param name="Pairs">Pairs in the prompt.</param>
/// <param name="QueriedPair">0-based index of the queried pair.</param>
/// <param name="Length">The prompt's length in tokens (with BOS) or characters, at most the target.</param>
public sealed record KeyValueSample(string Prompt, string Answer, string Key, int Pairs, int QueriedPair, int Length);

/// <summary>
/// Key-value recall: a seeded list of "key: value" lines (random hex strings, keys distinct), then a
/// question for one key. The list is a prefix of one seeded stream, so the pairs of a seed do not depend
/// on the length target; the queried pair is at a given depth or seeded.
/// </summary>
public sealed class KeyValueRecallTask
{
    /// <summary>The line before the pairs.</summary>
    public const string Instruction = "Below is a list of keys and their values. Remember them: you will be asked for the value of one key.\n";

    private readonly HexShape keyShape, valueShape;
    private readonly PromptLength length;

    /// <summary>A task measuring length with <paramref name="tokenizer"/> (characters when null).</summary>
    /// <param name="tokenizer">Measures length targets in tokens; null measures characters.</param>
    /// <param name="keyShape">Shape of keys (default UUID-like).</param>
    /// <param name="valueShape">Shape of values (default UUID-like).</param>
    public KeyValueRecallTask(ITokenizer? tokenizer = null, HexShape? keyShape = null, HexShape? valueShape = null)
    {
        this.keyShape = keyShape ?? HexShape.Uuid;
        this.valueShape = valueShape ?? HexShape.Uuid;
        length = new PromptLength(tokenizer);
    }

    /// <summary>The prompt for <paramref name="seed"/> with as many pairs as fit <paramref name="targetLength"/>.</summary>
    /// <param name="seed">Chooses the pairs and (without a depth) the queried pair.</param>
    /// <param name="targetLength">Most tokens (with a tokenizer) or characters of the prompt.</param>
    /// <param name="queryDepth">Where the queried pair sits, as a fraction of the list in [0, 1]; null draws it from the seed.</param>
    public KeyValueSample Generate(long seed, int targetLength, double? queryDepth = null)
    {
        if (queryDepth is double d && !(d >= 0 && d <= 1)) throw new ArgumentOutOfRangeException(nameof(queryDepth), d, "query depth must lie in [0, 1]");
        var pairs = new PairStream(seed, keyShape, valueShape);
        var (count, promptLength) = length.LargestFitting(n => Build(pairs, n, Queried(seed, n, queryDepth)), 1, keyShape.MaxDistinct, targetLength, "key-value recall");
        int queried = Queried(seed, count, queryDepth);
        var (key, value) = pairs[queried];
        return new KeyValueSample(Build(pairs, count, queried), value, key, count, queried, promptLength);
    }

    /// <summary>The question after the pairs for <paramref name="key"/>.</summary>
    public static string Question(string key) => $"\nWhat is the value of key {key}? The value of key {key} is";

    private static int Queried(long seed, int pairs, double? depth) =>
        depth is double d ? (int)Math.Round(d * (pairs - 1), MidpointRounding.AwayFromZero) : new SeededRandom(seed, stream: 2).Next(pairs);

    private static string Build(PairStream pairs, int count, int queried)
    {
        var prompt = new StringBuilder(Instruction);
        for (int i = 0; i < count; i++)
        {
            var (key, value) = pairs[i];
            prompt.Append(key).Append(": ").Append(value).Append('\n');
        }
        prompt.Append(Question(pairs[queried].Key));
        return prompt.ToString();
    }

    /// <summary>The seed's pairs, drawn on demand in order; keys never repeat.</summary>
    private sealed class PairStream(long seed, HexShape keyShape, HexShape valueShape)
    {
        private readonly SeededRandom random = new(seed, stream: 1);
        private readonly List<(string Key, string Value)> pairs = [];
        private readonly HashSet<string> keys = new(StringComparer.Ordinal);

        public (string Key, string Value) this[int i]
        {
            get
            {
                while (pairs.Count <= i)
                {
                    string key = keyShape.Draw(random);
                    string value = valueShape.Draw(random);
                    if (keys.Add(key)) pairs.Add((key, value));
                }
                return pairs[i];
            }
        }
    }
}
