using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace UioLlm.Kernels.Quantization;

/// <summary>
/// A weight matrix W [rows, columns] kept block-quantised in host memory (ggml's Q8_0, Q4_0 or Q4_K layout, each
/// row a run of blocks), with the matrix-vector kernel decoding needs: y = W x reads 1.06 (Q8_0), 0.56 (Q4_0) or
/// 0.56 (Q4_K) bytes per weight instead of 4. Activations stay float32; each block's integers are widened and
/// multiplied in float (AVX2 + FMA where the CPU has them, a scalar loop otherwise).
/// </summary>
public sealed class QuantizedMatrix
{
    private readonly byte[] data;   // pinned: the kernels read it through a pointer

    private QuantizedMatrix(QuantFormat format, int rows, int columns, byte[] data)
    {
        Format = format;
        Rows = rows;
        Columns = columns;
        RowBytes = (int)QuantFormats.ByteCount(format, columns);
        this.data = data;
    }

    /// <summary>The formats that have a matrix-vector kernel.</summary>
    public static bool HasKernel(QuantFormat format) => format is QuantFormat.Q8_0 or QuantFormat.Q4_0 or QuantFormat.Q4_K;

    public QuantFormat Format { get; }
    public int Rows { get; }
    public int Columns { get; }
    /// <summary>Bytes of one row's blocks.</summary>
    public int RowBytes { get; }
    /// <summary>Bytes held (rows x row bytes).</summary>
    public long ByteLength => data.LongLength;

    /// <summary>The raw blocks, row after row (as stored in a GGUF file).</summary>
    public ReadOnlySpan<byte> Blocks => data;

    /// <summary>Wraps blocks read from a file (copied into pinned memory).</summary>
    /// <exception cref="ArgumentException">No kernel for the format, or the byte count does not fit the shape.</exception>
    public static QuantizedMatrix FromBlocks(QuantFormat format, int rows, int columns, ReadOnlySpan<byte> blocks)
    {
        Check(format, rows, columns);
        long expected = (long)rows * QuantFormats.ByteCount(format, columns);
        if (blocks.Length != expected)
            throw new ArgumentException($"QuantizedMatrix: {format} [{rows}, {columns}] needs {expected} bytes, got {blocks.Length}", nameof(blocks));
        var copy = GC.AllocateUninitializedArray<byte>(blocks.Length, pinned: true);
        blocks.CopyTo(copy);
        return new QuantizedMatrix(format, rows, columns, copy);
    }

    /// <summary>
    /// Quantises a row-major float matrix. Q8_0 and Q4_0 follow ggml's reference quantisers (quantize_row_*_ref);
    /// Q4_K uses a plain per-group min/max fit (valid Q4_K blocks, not llama.cpp's error-minimising search).
    /// </summary>
    public static QuantizedMatrix Quantize(QuantFormat format, ReadOnlySpan<float> weights, int rows, int columns)
    {
        Check(format, rows, columns);
        if (weights.Length != (long)rows * columns)
            throw new ArgumentException($"QuantizedMatrix: {weights.Length} weights for [{rows}, {columns}]", nameof(weights));
        int be = QuantFormats.BlockElements(format), bb = QuantFormats.BlockBytes(format);
        var bytes = GC.AllocateArray<byte>(checked(rows * (int)QuantFormats.ByteCount(format, columns)), pinned: true);
        int blocks = weights.Length / be;
        for (int b = 0; b < blocks; b++)
        {
            var x = weights.Slice(b * be, be);
            var y = bytes.AsSpan(b * bb, bb);
            switch (format)
            {
                case QuantFormat.Q8_0: QuantizeQ8_0(x, y); break;
                case QuantFormat.Q4_0: QuantizeQ4_0(x, y); break;
                default: QuantizeQ4_K(x, y); break;
            }
        }
        return new QuantizedMatrix(format, rows, columns, bytes);
    }

    private static void Check(QuantFormat format, int rows, int columns)
    {
        if (!HasKernel(format))
            throw new ArgumentException($"QuantizedMatrix: no matrix-vector kernel for {format} (kept quantised: Q8_0, Q4_0, Q4_K); dequantise it instead", nameof(format));
        if (rows <= 0 || columns <= 0)
            throw new ArgumentException($"QuantizedMatrix: shape [{rows}, {columns}] must be positive");
        if (columns % QuantFormats.BlockElements(format) != 0)
            throw new ArgumentException($"QuantizedMatrix: {format} rows must be a multiple of {QuantFormats.BlockElements(format)} weights, got {columns}");
    }

    /// <summary>Every weight as float32, row-major (the same values as <see cref="QuantFormats.Dequantize"/>).</summary>
    public float[] Dequantize()
    {
        var values = new float[(long)Rows * Columns];
        QuantFormats.Dequantize(Format, data, values);
        return values;
    }

    /// <summary>
    /// y[t, r] = sum_c W[r, c] x[t, c] for every row t of x [T, columns] into y [T, rows] (as MatMul(x, W, y, transB)),
    /// split over up to <paramref name="threads"/> threads by weight rows.
    /// </summary>
    public unsafe void MatVec(ReadOnlySpan<float> x, Span<float> y, int tokens = 1, int threads = 1)
    {
        if (tokens <= 0) throw new ArgumentOutOfRangeException(nameof(tokens), $"QuantizedMatrix.MatVec: tokens must be positive, got {tokens}");
        if (x.Length != (long)tokens * Columns)
            throw new ArgumentException($"QuantizedMatrix.MatVec: x has {x.Length} values, expected {tokens} x {Columns}", nameof(x));
        if (y.Length != (long)tokens * Rows)
            throw new ArgumentException($"QuantizedMatrix.MatVec: y has {y.Length} values, expected {tokens} x {Rows}", nameof(y));
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var job = new Job(this, px, py, tokens);
            // Parts of at least 16 rows, a few per thread so that a late helper leaves work to the others.
            int parts = Math.Max(1, Math.Min(Rows / 16, threads * 4));
            if (threads <= 1 || parts == 1) job.Rows(0, Rows);
            else Cpu.Gemm.WorkerPool.For(parts, threads, p => job.Rows((int)((long)Rows * p / parts), (int)((long)Rows * (p + 1) / parts)));
        }
    }

    private readonly unsafe struct Job(QuantizedMatrix m, float* x, float* y, int tokens)
    {
        public void Rows(int from, int to)
        {
            fixed (byte* w = m.data)
            {
                for (int r = from; r < to; r++)
                {
                    byte* row = w + (long)r * m.RowBytes;
                    for (int t = 0; t < tokens; t++)
                        y[(long)t * m.Rows + r] = Dot(m.Format, row, x + (long)t * m.Columns, m.Columns);
                }
            }
        }
    }

    /// <summary>One row's blocks dotted with x (<paramref name="n"/> weights).</summary>
    internal static unsafe float Dot(QuantFormat format, byte* row, float* x, int n)
    {
        if (Fma.IsSupported && Avx2.IsSupported)
        {
            return format switch
            {
                QuantFormat.Q8_0 => DotQ8_0Avx2(row, x, n),
                QuantFormat.Q4_0 => DotQ4_0Avx2(row, x, n),
                _ => DotQ4_KAvx2(row, x, n),
            };
        }
        return DotScalar(format, row, x, n);
    }

    /// <summary>The portable kernel: dequantise one block at a time and accumulate in float.</summary>
    internal static unsafe float DotScalar(QuantFormat format, byte* row, float* x, int n)
    {
        int be = QuantFormats.BlockElements(format), bb = QuantFormats.BlockBytes(format);
        Span<float> w = stackalloc float[256];
        float sum = 0;
        for (int b = 0; b < n / be; b++)
        {
            var block = w[..be];
            QuantFormats.Dequantize(format, new ReadOnlySpan<byte>(row + (long)b * bb, bb), block);
            float* xb = x + b * be;
            for (int i = 0; i < be; i++) sum += block[i] * xb[i];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe float HalfAt(byte* p) => (float)BitConverter.UInt16BitsToHalf(*(ushort*)p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum(Vector256<float> v)
    {
        var s = Sse.Add(v.GetLower(), v.GetUpper());
        s = Sse.Add(s, Sse.MoveHighToLow(s, s));
        s = Sse.AddScalar(s, Sse.Shuffle(s, s, 1));
        return s.ToScalar();
    }

    private static unsafe float DotQ8_0Avx2(byte* row, float* x, int n)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < n / 32; b++, row += 34, x += 32)
        {
            var d = Vector256.Create(HalfAt(row));
            sbyte* q = (sbyte*)(row + 2);
            var s = Avx.Multiply(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q)), Avx.LoadVector256(x));
            s = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 8)), Avx.LoadVector256(x + 8), s);
            s = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 16)), Avx.LoadVector256(x + 16), s);
            s = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + 24)), Avx.LoadVector256(x + 24), s);
            acc = Fma.MultiplyAdd(s, d, acc);
        }
        return Sum(acc);
    }

    // Byte j of a Q4_0 block holds weight j (low nibble) and weight j + 16 (high nibble), both stored as q + 8.
    private static unsafe float DotQ4_0Avx2(byte* row, float* x, int n)
    {
        var acc = Vector256<float>.Zero;
        var mask = Vector256.Create(15);
        var eight = Vector256.Create(8);
        for (int b = 0; b < n / 32; b++, row += 18, x += 32)
        {
            var d = Vector256.Create(HalfAt(row));
            byte* q = row + 2;
            var v0 = Avx2.ConvertToVector256Int32(q);
            var v1 = Avx2.ConvertToVector256Int32(q + 8);
            var s = Avx.Multiply(Avx.ConvertToVector256Single(Avx2.Subtract(Avx2.And(v0, mask), eight)), Avx.LoadVector256(x));
            s = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.Subtract(Avx2.And(v1, mask), eight)), Avx.LoadVector256(x + 8), s);
            s = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.Subtract(Avx2.ShiftRightLogical(v0, 4), eight)), Avx.LoadVector256(x + 16), s);
            s = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.Subtract(Avx2.ShiftRightLogical(v1, 4), eight)), Avx.LoadVector256(x + 24), s);
            acc = Fma.MultiplyAdd(s, d, acc);
        }
        return Sum(acc);
    }

    // A Q4_K block: half d, half dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles. Each 32 bytes hold two
    // groups of 32 weights (low nibbles, then high nibbles); weight = d*sc*q - dmin*m, so a group contributes
    // d*sc * sum(q x) - dmin*m * sum(x).
    private static unsafe float DotQ4_KAvx2(byte* row, float* x, int n)
    {
        var acc = Vector256<float>.Zero;
        var mask = Vector256.Create(15);
        for (int b = 0; b < n / 256; b++, row += 144)
        {
            float d = HalfAt(row), dmin = HalfAt(row + 2);
            var scales = new ReadOnlySpan<byte>(row + 4, 12);
            byte* q = row + 16;
            for (int g = 0; g < 8; g += 2, q += 32, x += 64)
            {
                var (sc1, m1) = QuantFormats.ScaleMinK4(g, scales);
                var (sc2, m2) = QuantFormats.ScaleMinK4(g + 1, scales);
                Vector256<float> lo = Vector256<float>.Zero, hi = Vector256<float>.Zero;
                Vector256<float> xlo = Vector256<float>.Zero, xhi = Vector256<float>.Zero;
                for (int k = 0; k < 32; k += 8)
                {
                    var v = Avx2.ConvertToVector256Int32(q + k);
                    var a = Avx.LoadVector256(x + k);
                    var c = Avx.LoadVector256(x + 32 + k);
                    lo = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.And(v, mask)), a, lo);
                    hi = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ShiftRightLogical(v, 4)), c, hi);
                    xlo = Avx.Add(xlo, a);
                    xhi = Avx.Add(xhi, c);
                }
                acc = Fma.MultiplyAdd(lo, Vector256.Create(d * sc1), acc);
                acc = Fma.MultiplyAdd(hi, Vector256.Create(d * sc2), acc);
                acc = Fma.MultiplyAdd(xlo, Vector256.Create(-(dmin * m1)), acc);
                acc = Fma.MultiplyAdd(xhi, Vector256.Create(-(dmin * m2)), acc);
            }
        }
        return Sum(acc);
    }

    // ggml's quantize_row_q8_0_ref: d = amax / 127, q = round(x / d).
    private static void QuantizeQ8_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        float amax = 0;
        foreach (float v in x) amax = MathF.Max(amax, MathF.Abs(v));
        float d = amax / 127;
        float id = d != 0 ? 1f / d : 0f;
        WriteHalf(y, 0, d);
        for (int j = 0; j < 32; j++) y[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }

    // ggml's quantize_row_q4_0_ref: d = (value of largest magnitude) / -8, q = min(15, (int)(x / d + 8.5)).
    private static void QuantizeQ4_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
            if (amax < MathF.Abs(v))
            {
                amax = MathF.Abs(v);
                max = v;
            }
        float d = max / -8;
        float id = d != 0 ? 1f / d : 0f;
        WriteHalf(y, 0, d);
        for (int j = 0; j < 16; j++)
        {
            int q0 = Math.Min(15, (int)(sbyte)(int)(x[j] * id + 8.5f));
            int q1 = Math.Min(15, (int)(sbyte)(int)(x[j + 16] * id + 8.5f));
            y[2 + j] = (byte)(q0 | (q1 << 4));
        }
    }

    // Q4_K by a plain fit: per group of 32, scale = (max - min) / 15 and offset = -min (min clamped to <= 0);
    // the 8 scales and offsets are quantised to 6 bits against the block's d and dmin.
    private static void QuantizeQ4_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<float> scale = stackalloc float[8], offset = stackalloc float[8];
        for (int g = 0; g < 8; g++)
        {
            var group = x.Slice(32 * g, 32);
            float lo = 0, hi = float.MinValue;
            foreach (float v in group)
            {
                lo = MathF.Min(lo, v);
                hi = MathF.Max(hi, v);
            }
            scale[g] = (hi - lo) / 15;
            offset[g] = -lo;
        }
        float maxScale = 0, maxOffset = 0;
        for (int g = 0; g < 8; g++)
        {
            maxScale = MathF.Max(maxScale, scale[g]);
            maxOffset = MathF.Max(maxOffset, offset[g]);
        }
        float d = maxScale / 63, dmin = maxOffset / 63;
        WriteHalf(y, 0, d);
        WriteHalf(y, 2, dmin);
        d = QuantFormats.Half(y, 0);
        dmin = QuantFormats.Half(y, 2);
        Span<byte> sc = stackalloc byte[8], mn = stackalloc byte[8];
        for (int g = 0; g < 8; g++)
        {
            sc[g] = (byte)Math.Clamp((int)MathF.Round(d > 0 ? scale[g] / d : 0), 0, 63);
            mn[g] = (byte)Math.Clamp((int)MathF.Round(dmin > 0 ? offset[g] / dmin : 0), 0, 63);
        }
        var packed = y.Slice(4, 12);
        for (int j = 0; j < 4; j++)
        {
            packed[j] = (byte)(sc[j] | ((sc[j + 4] >> 4) << 6));
            packed[j + 4] = (byte)(mn[j] | ((mn[j + 4] >> 4) << 6));
            packed[j + 8] = (byte)((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
        }
        var qs = y.Slice(16, 128);
        for (int g = 0; g < 8; g++)
        {
            var (s, m) = QuantFormats.ScaleMinK4(g, packed);
            float dl = d * s, ml = dmin * m;
            for (int l = 0; l < 32; l++)
            {
                int q = dl > 0 ? Math.Clamp((int)MathF.Round((x[32 * g + l] + ml) / dl), 0, 15) : 0;
                int at = 32 * (g / 2) + l;
                qs[at] = (byte)(g % 2 == 0 ? (qs[at] & 0xF0) | q : (qs[at] & 0x0F) | (q << 4));
            }
        }
    }

    private static void WriteHalf(Span<byte> y, int offset, float value) =>
        MemoryMarshal.Write(y.Slice(offset, 2), BitConverter.HalfToUInt16Bits((Half)value));
}
