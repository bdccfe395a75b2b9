namespace UioLlm.Training.Data;

/// <summary>
/// A small deterministic generator (SplitMix64) whose output depends only on its seed and stream, never on
/// the .NET version, so shuffles and synthetic tasks reproduce across machines and runtimes.
/// </summary>
public sealed class SeededRandom
{
    private ulong state;

    /// <summary>A generator for <paramref name="seed"/>; different <paramref name="stream"/>s give independent sequences.</summary>
    public SeededRandom(long seed, long stream = 0)
    {
        state = Mix((ulong)seed ^ Mix((ulong)stream + 0x632BE59BD9B4E019UL));
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        state += 0x9E3779B97F4A7C15UL;
        return Mix(state);
    }

    /// <summary>A uniform integer in [0, <paramref name="bound"/>), without modulo bias.</summary>
    public int Next(int bound)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bound);
        // Reject the top partial block of 2^64 so every residue is equally likely.
        ulong limit = ulong.MaxValue - ulong.MaxValue % (ulong)bound;
        ulong x;
        do x = NextUInt64(); while (x >= limit);
        return (int)(x % (ulong)bound);
    }

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Fisher-Yates shuffle of <paramref name="items"/> in place.</summary>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = Next(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
