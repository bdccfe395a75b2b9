namespace UioLlm.Tests.Formats;

/// <summary>Plain round-to-nearest-even references for float32 -> half and float32 -> bfloat16, by comparing neighbours.</summary>
public static class RoundingReference
{
    /// <summary>All non-negative finite halves in increasing order (bit pattern i has value Values[i]).</summary>
    private static readonly double[] HalfValues = Enumerable.Range(0, 0x7C00).Select(i => (double)HalfReference.Decode((ushort)i)).ToArray();

    public static ushort ToHalf(float x)
    {
        if (float.IsNaN(x)) throw new ArgumentException("NaN has no single rounding");
        ushort sign = (ushort)(x < 0 || (x == 0 && float.IsNegative(x)) ? 0x8000 : 0);
        double a = Math.Abs((double)x);
        // Beyond the largest half (65504) by half a step (16) or more: infinity (the tie goes to the even pattern 0x7C00).
        if (a >= 65520) return (ushort)(sign | 0x7C00);
        if (a >= 65504) return (ushort)(sign | 0x7BFF);
        int hi = Array.BinarySearch(HalfValues, a);
        if (hi >= 0) return (ushort)(sign | hi);
        hi = ~hi;
        int lo = hi - 1;
        double dLo = a - HalfValues[lo], dHi = HalfValues[hi] - a;
        int pick = dLo < dHi ? lo : dHi < dLo ? hi : (lo % 2 == 0 ? lo : hi);
        return (ushort)(sign | pick);
    }

    public static ushort ToBFloat16(float x)
    {
        if (float.IsNaN(x)) throw new ArgumentException("NaN has no single rounding");
        uint bits = BitConverter.SingleToUInt32Bits(x);
        if (float.IsInfinity(x)) return (ushort)(bits >> 16);
        uint sign = bits & 0x80000000u, magnitude = bits & 0x7FFFFFFFu;
        uint lo = magnitude >> 16, hi = lo + 1;
        double a = Math.Abs((double)x);
        double vLo = BitConverter.UInt32BitsToSingle(lo << 16);
        double vHi = hi == 0x7F80 ? Math.Pow(2, 128) : BitConverter.UInt32BitsToSingle(hi << 16);
        double dLo = a - vLo, dHi = vHi - a;
        uint pick = dLo < dHi ? lo : dHi < dLo ? hi : (lo % 2 == 0 ? lo : hi);
        return (ushort)((sign >> 16) | pick);
    }

    /// <summary>Values that exercise ties, subnormals, overflow and signs, plus seeded random ones.</summary>
    public static float[] Probes()
    {
        var list = new List<float>
        {
            0f, -0f, 1f, -1f, 1f + MathF.Pow(2, -8), 1f + 3 * MathF.Pow(2, -8), 1f + MathF.Pow(2, -11), 1f + 3 * MathF.Pow(2, -11),
            65504f, 65519f, 65520f, -65520f, 70000f, 1e-8f, MathF.Pow(2, -25), 3 * MathF.Pow(2, -25), MathF.Pow(2, -24), 6e-5f,
            float.MaxValue, -float.MaxValue, float.Epsilon, 1e-40f, float.PositiveInfinity, float.NegativeInfinity, 3.14159265f,
            BitConverter.UInt32BitsToSingle(0x3F808000), BitConverter.UInt32BitsToSingle(0x3F818000), BitConverter.UInt32BitsToSingle(0x7F7F8000),
        };
        var random = new Random(5);
        for (int i = 0; i < 2000; i++)
            list.Add((float)((random.NextDouble() - 0.5) * Math.Pow(2, random.Next(-30, 20))));
        return list.ToArray();
    }
}
