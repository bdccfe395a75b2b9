namespace UioLlm.Model.Generation;

/// <summary>
/// Picks the next token from logits: greedy (the first maximum) at temperature 0, otherwise a draw from
/// softmax(logits / temperature) restricted to the smallest set of most likely tokens whose probability
/// reaches top-p (nucleus sampling). Seeded, so a run repeats exactly.
/// </summary>
public sealed class Sampler
{
    private readonly Random rng;
    private float[] probabilities = [];
    private int[] order = [];

    public Sampler(float temperature = 0f, float topP = 1f, int seed = 0)
    {
        if (!(temperature >= 0) || !float.IsFinite(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), $"temperature must be a finite number >= 0, got {temperature}");
        if (!(topP > 0 && topP <= 1))
            throw new ArgumentOutOfRangeException(nameof(topP), $"top-p must be in (0, 1], got {topP}");
        Temperature = temperature;
        TopP = topP;
        rng = new Random(seed);
    }

    public float Temperature { get; }
    public float TopP { get; }

    public int Sample(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("Sampler: no logits", nameof(logits));
        NonFiniteException.ThrowIfAny(logits, "sampling");
        if (Temperature == 0f) return ArgMax(logits);
        return Draw(logits);
    }

    /// <summary>Index of the first largest value (NaN never wins).</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        float max = float.NegativeInfinity;
        for (int i = 0; i < values.Length; i++)
            if (values[i] > max) { max = values[i]; best = i; }
        return best;
    }

    private int Draw(ReadOnlySpan<float> logits)
    {
        int n = logits.Length;
        if (probabilities.Length < n) { probabilities = new float[n]; order = new int[n]; }
        var p = probabilities.AsSpan(0, n);

        // Softmax of logits / T, shifted by the maximum for range.
        float max = logits[ArgMax(logits)];
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            float e = MathF.Exp((logits[i] - max) / Temperature);
            p[i] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < n; i++) p[i] *= inv;

        double u = rng.NextDouble();
        if (TopP >= 1f) return Pick(p, u);

        // Nucleus: most likely first, keep tokens until their mass reaches top-p, draw within them.
        var idx = order.AsSpan(0, n);
        for (int i = 0; i < n; i++) idx[i] = i;
        var probs = probabilities;
        idx.Sort((a, b) => probs[b].CompareTo(probs[a]) is var c && c != 0 ? c : a.CompareTo(b));
        double mass = 0;
        int keep = 0;
        while (keep < n)
        {
            mass += p[idx[keep++]];
            if (mass >= TopP) break;
        }
        double target = u * mass, acc = 0;
        for (int i = 0; i < keep; i++)
        {
            acc += p[idx[i]];
            if (target < acc) return idx[i];
        }
        return idx[keep - 1];
    }

    private static int Pick(ReadOnlySpan<float> p, double u)
    {
        double acc = 0;
        for (int i = 0; i < p.Length; i++)
        {
            acc += p[i];
            if (u < acc) return i;
        }
        // Rounding left u above the total: the last token with any mass.
        for (int i = p.Length - 1; i >= 0; i--)
            if (p[i] > 0) return i;
        return p.Length - 1;
    }
}
