using System.Buffers.Binary;

namespace UioLlm.Kernels.Quantization;

/// <summary>
/// The ggml block-quantisation formats this engine reads (GGUF tensor types). Each row of a quantised matrix is
/// a run of fixed-size blocks; a block holds <see cref="QuantFormats.BlockElements"/> weights in
/// <see cref="QuantFormats.BlockBytes"/> bytes (scales as IEEE half floats, little-endian, then packed integers).
/// </summary>
public enum QuantFormat
{
    /// <summary>32 weights: half d, 16 bytes of 4-bit q; w = (q - 8) d.</summary>
    Q4_0,
    /// <summary>32 weights: half d, half m, 16 bytes of 4-bit q; w = q d + m.</summary>
    Q4_1,
    /// <summary>32 weights: half d, 32 high bits, 16 bytes of low nibbles; w = (q - 16) d.</summary>
    Q5_0,
    /// <summary>32 weights: half d, half m, 32 high bits, 16 bytes of low nibbles; w = q d + m.</summary>
    Q5_1,
    /// <summary>32 weights: half d, 32 signed bytes; w = q d.</summary>
    Q8_0,
    /// <summary>256 weights in 16 groups of 16: 4-bit scales and mins, 2-bit q, half d and dmin.</summary>
    Q2_K,
    /// <summary>256 weights in 16 groups of 16: 6-bit signed scales, 2 low bits plus a high-bit mask, half d.</summary>
    Q3_K,
    /// <summary>256 weights in 8 groups of 32: 6-bit scales and mins, 4-bit q, half d and dmin.</summary>
    Q4_K,
    /// <summary>256 weights in 8 groups of 32: 6-bit scales and mins, 4 low bits plus one high bit, half d and dmin.</summary>
    Q5_K,
    /// <summary>256 weights in 16 groups of 16: 8-bit signed scales, 4 low bits plus 2 high bits, half d.</summary>
    Q6_K,
}

/// <summary>
/// Block layouts and the reference dequantisation of every <see cref="QuantFormat"/>. The arithmetic is ggml's
/// (ggml-quants.c, dequantize_row_*): the same float operations in the same order, each rounded to single
/// precision and never fused, so the results are bit-identical to ggml's own <c>to_float</c>.
/// </summary>
public static class QuantFormats
{
    /// <summary>Weights per block (32, or 256 for the K-quants).</summary>
    public static int BlockElements(QuantFormat format) => format switch
    {
        QuantFormat.Q4_0 or QuantFormat.Q4_1 or QuantFormat.Q5_0 or QuantFormat.Q5_1 or QuantFormat.Q8_0 => 32,
        QuantFormat.Q2_K or QuantFormat.Q3_K or QuantFormat.Q4_K or QuantFormat.Q5_K or QuantFormat.Q6_K => 256,
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown quantisation format"),
    };

    /// <summary>Bytes per block.</summary>
    public static int BlockBytes(QuantFormat format) => format switch
    {
        QuantFormat.Q4_0 => 18,
        QuantFormat.Q4_1 => 20,
        QuantFormat.Q5_0 => 22,
        QuantFormat.Q5_1 => 24,
        QuantFormat.Q8_0 => 34,
        QuantFormat.Q2_K => 84,
        QuantFormat.Q3_K => 110,
        QuantFormat.Q4_K => 144,
        QuantFormat.Q5_K => 176,
        QuantFormat.Q6_K => 210,
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown quantisation format"),
    };

    /// <summary>Bytes of <paramref name="elements"/> weights (a multiple of the block size).</summary>
    public static long ByteCount(QuantFormat format, long elements)
    {
        int be = BlockElements(format);
        if (elements % be != 0)
            throw new ArgumentException($"{format}: {elements} weights are not a whole number of {be}-weight blocks", nameof(elements));
        return elements / be * BlockBytes(format);
    }

    internal static float Half(ReadOnlySpan<byte> b, int offset) =>
        (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(offset, 2)));

    /// <summary>
    /// Dequantises <paramref name="source"/> (whole blocks) into <paramref name="destination"/>, which must hold
    /// exactly the blocks' weights.
    /// </summary>
    public static void Dequantize(QuantFormat format, ReadOnlySpan<byte> source, Span<float> destination)
    {
        int be = BlockElements(format), bb = BlockBytes(format);
        if (source.Length % bb != 0)
            throw new ArgumentException($"{format}: {source.Length} bytes are not a whole number of {bb}-byte blocks", nameof(source));
        int blocks = source.Length / bb;
        if (destination.Length != (long)blocks * be)
            throw new ArgumentException($"{format}: {blocks} blocks hold {(long)blocks * be} weights, the destination has room for {destination.Length}", nameof(destination));
        for (int i = 0; i < blocks; i++)
        {
            var x = source.Slice(i * bb, bb);
            var y = destination.Slice(i * be, be);
            switch (format)
            {
                case QuantFormat.Q4_0: Q4_0(x, y); break;
                case QuantFormat.Q4_1: Q4_1(x, y); break;
                case QuantFormat.Q5_0: Q5_0(x, y); break;
                case QuantFormat.Q5_1: Q5_1(x, y); break;
                case QuantFormat.Q8_0: Q8_0(x, y); break;
                case QuantFormat.Q2_K: Q2_K(x, y); break;
                case QuantFormat.Q3_K: Q3_K(x, y); break;
                case QuantFormat.Q4_K: Q4_K(x, y); break;
                case QuantFormat.Q5_K: Q5_K(x, y); break;
                case QuantFormat.Q6_K: Q6_K(x, y); break;
            }
        }
    }

    private static void Q4_0(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0);
        var qs = x.Slice(2, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((qs[j] >> 4) - 8) * d;
        }
    }

    private static void Q4_1(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0), m = Half(x, 2);
        var qs = x.Slice(4, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = (qs[j] & 0x0F) * d + m;
            y[j + 16] = (qs[j] >> 4) * d + m;
        }
    }

    private static void Q5_0(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(x.Slice(2, 4));
        var qs = x.Slice(6, 16);
        for (int j = 0; j < 16; j++)
        {
            int h0 = (int)((qh >> j) << 4) & 0x10;
            int h1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (((qs[j] & 0x0F) | h0) - 16) * d;
            y[j + 16] = (((qs[j] >> 4) | h1) - 16) * d;
        }
    }

    private static void Q5_1(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0), m = Half(x, 2);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(x.Slice(4, 4));
        var qs = x.Slice(8, 16);
        for (int j = 0; j < 16; j++)
        {
            int h0 = (int)((qh >> j) << 4) & 0x10;
            int h1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = ((qs[j] & 0x0F) | h0) * d + m;
            y[j + 16] = ((qs[j] >> 4) | h1) * d + m;
        }
    }

    private static void Q8_0(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0);
        for (int j = 0; j < 32; j++) y[j] = (sbyte)x[2 + j] * d;
    }

    // block_q2_K: scales[16], qs[64], half d, half dmin.
    private static void Q2_K(ReadOnlySpan<byte> x, Span<float> y)
    {
        var scales = x[..16];
        var qs = x.Slice(16, 64);
        float d = Half(x, 80), min = Half(x, 82);
        int o = 0, s = 0;
        for (int n = 0; n < 256; n += 128)
        {
            var q = qs.Slice(n / 4, 32);
            for (int shift = 0; shift < 8; shift += 2)
            {
                byte sc = scales[s++];
                float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                for (int l = 0; l < 16; l++) y[o++] = dl * ((q[l] >> shift) & 3) - ml;
                sc = scales[s++];
                dl = d * (sc & 0xF);
                ml = min * (sc >> 4);
                for (int l = 0; l < 16; l++) y[o++] = dl * ((q[l + 16] >> shift) & 3) - ml;
            }
        }
    }

    // block_q3_K: hmask[32], qs[64], scales[12], half d.
    private static void Q3_K(ReadOnlySpan<byte> x, Span<float> y)
    {
        var hm = x[..32];
        var qs = x.Slice(32, 64);
        var packed = x.Slice(96, 12);
        float dAll = Half(x, 108);
        const uint kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
        uint a0 = BinaryPrimitives.ReadUInt32LittleEndian(packed), a1 = BinaryPrimitives.ReadUInt32LittleEndian(packed[4..]);
        uint tmp = BinaryPrimitives.ReadUInt32LittleEndian(packed[8..]);
        Span<uint> aux =
        [
            (a0 & kmask2) | (((tmp >> 0) & kmask1) << 4),
            (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4),
            ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4),
            ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4),
        ];
        Span<sbyte> scales = stackalloc sbyte[16];
        for (int i = 0; i < 16; i++) scales[i] = (sbyte)(aux[i / 4] >> (8 * (i % 4)));
        int o = 0, s = 0;
        int m = 1;
        for (int n = 0; n < 256; n += 128)
        {
            var q = qs.Slice(n / 4, 32);
            for (int shift = 0; shift < 8; shift += 2)
            {
                float dl = dAll * (scales[s++] - 32);
                for (int l = 0; l < 16; l++) y[o++] = dl * (((q[l] >> shift) & 3) - ((hm[l] & m) != 0 ? 0 : 4));
                dl = dAll * (scales[s++] - 32);
                for (int l = 0; l < 16; l++) y[o++] = dl * (((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) != 0 ? 0 : 4));
                m <<= 1;
            }
        }
    }

    /// <summary>The 6-bit scale and min of group <paramref name="j"/> (0..7) of a Q4_K / Q5_K block (ggml's get_scale_min_k4).</summary>
    internal static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> q)
    {
        if (j < 4) return (q[j] & 63, q[j + 4] & 63);
        return ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }

    // block_q4_K: half d, half dmin, scales[12], qs[128].
    private static void Q4_K(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0), min = Half(x, 2);
        var scales = x.Slice(4, 12);
        var qs = x.Slice(16, 128);
        int o = 0;
        for (int j = 0, g = 0; j < 256; j += 64, g += 2)
        {
            var (sc1, m1i) = ScaleMinK4(g, scales);
            float d1 = d * sc1, m1 = min * m1i;
            var (sc2, m2i) = ScaleMinK4(g + 1, scales);
            float d2 = d * sc2, m2 = min * m2i;
            var q = qs.Slice(j / 2, 32);
            for (int l = 0; l < 32; l++) y[o++] = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) y[o++] = d2 * (q[l] >> 4) - m2;
        }
    }

    // block_q5_K: half d, half dmin, scales[12], qh[32], qs[128].
    private static void Q5_K(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0), min = Half(x, 2);
        var scales = x.Slice(4, 12);
        var qh = x.Slice(16, 32);
        var qs = x.Slice(48, 128);
        int o = 0, u1 = 1, u2 = 2;
        for (int j = 0, g = 0; j < 256; j += 64, g += 2)
        {
            var (sc1, m1i) = ScaleMinK4(g, scales);
            float d1 = d * sc1, m1 = min * m1i;
            var (sc2, m2i) = ScaleMinK4(g + 1, scales);
            float d2 = d * sc2, m2 = min * m2i;
            var ql = qs.Slice(j / 2, 32);
            for (int l = 0; l < 32; l++) y[o++] = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) y[o++] = d2 * ((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) - m2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }

    // block_q6_K: ql[128], qh[64], scales[16] (int8), half d.
    private static void Q6_K(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 208);
        for (int n = 0; n < 2; n++)
        {
            var ql = x.Slice(64 * n, 64);
            var qh = x.Slice(128 + 32 * n, 32);
            var sc = x.Slice(192 + 8 * n, 8);
            var yy = y.Slice(128 * n, 128);
            for (int l = 0; l < 32; l++)
            {
                int s = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                yy[l] = d * (sbyte)sc[s] * q1;
                yy[l + 32] = d * (sbyte)sc[s + 2] * q2;
                yy[l + 64] = d * (sbyte)sc[s + 4] * q3;
                yy[l + 96] = d * (sbyte)sc[s + 6] * q4;
            }
        }
    }
}
