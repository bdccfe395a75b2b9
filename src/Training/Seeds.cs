namespace UioLlm.Training;

/// <summary>Seeds derived from a run seed and a counter, so every random choice can be replayed from (seed, step).</summary>
public static class Seeds
{
    /// <summary>A well-mixed 31-bit seed from (<paramref name="seed"/>, <paramref name="counter"/>) (SplitMix64 finaliser).</summary>
    public static int Derive(long seed, long counter)
    {
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)counter + 0x632BE59BD9B4E019UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return (int)(z & 0x7FFFFFFF);
    }
}
