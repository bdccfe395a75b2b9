using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace UioLlm.Kernels.Quantization;

/// <summary>
/// A weight matrix W [rows, columns] kept block-quantised in host memory (ggml's Q8_0, Q4_0, Q4_K or Q6_K layout,
/// each row a run of blocks), with the matrix-vector kernel decoding needs: y = W x reads 1.06 (Q8_0), 0.56 (Q4_0),
/// 0.56 (Q4_K) or 0.82 (Q6_K) bytes per weight instead of 4. As llama.cpp does, the activations are quantised to 8 bits per block
/// of 32 and each block's integer dot product is formed with AVX2 (vpmaddubsw / vpmaddwd, one float conversion
/// per block); a scalar loop serves CPUs without AVX2.
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
    public static bool HasKernel(QuantFormat format) => format is QuantFormat.Q8_0 or QuantFormat.Q4_0 or QuantFormat.Q4_K or QuantFormat.Q6_K;

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
        if (format == QuantFormat.Q6_K)
            throw new ArgumentException("QuantizedMatrix.Quantize: no Q6_K quantiser here (Q6_K matrices come from GGUF files); use Q8_0, Q4_0 or Q4_K", nameof(format));
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
            throw new ArgumentException($"QuantizedMatrix: no matrix-vector kernel for {format} (kept quantised: Q8_0, Q4_0, Q4_K, Q6_K); dequantise it instead", nameof(format));
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
    /// split over up to <paramref name="threads"/> threads by weight rows. As in llama.cpp, each row of x is first
    /// quantised to 8 bits in blocks of 32 (<see cref="QuantizeActivations"/>), so the inner loop multiplies
    /// integers (AVX2 vpmaddubsw / vpmaddwd) and converts to float once per block.
    /// </summary>
    public unsafe void MatVec(ReadOnlySpan<float> x, Span<float> y, int tokens = 1, int threads = 1)
    {
        if (tokens <= 0) throw new ArgumentOutOfRangeException(nameof(tokens), $"QuantizedMatrix.MatVec: tokens must be positive, got {tokens}");
        if (x.Length != (long)tokens * Columns)
            throw new ArgumentException($"QuantizedMatrix.MatVec: x has {x.Length} values, expected {tokens} x {Columns}", nameof(x));
        if (y.Length != (long)tokens * Rows)
            throw new ArgumentException($"QuantizedMatrix.MatVec: y has {y.Length} values, expected {tokens} x {Rows}", nameof(y));
        int blocks = Columns / 32;
        var scratch = Activations.For(tokens * Columns, tokens * blocks);
        for (int t = 0; t < tokens; t++)
            QuantizeActivations(x.Slice(t * Columns, Columns), scratch.Q.AsSpan(t * Columns, Columns),
                scratch.Scale.AsSpan(t * blocks, blocks), scratch.Sum.AsSpan(t * blocks, blocks));
        fixed (sbyte* q = scratch.Q)
        fixed (float* scale = scratch.Scale)
        fixed (float* sum = scratch.Sum)
        fixed (float* py = y)
        {
            var job = new Job(this, q, scale, sum, py, tokens);
            // Parts of at least 16 rows, a few per thread so that a late helper leaves work to the others.
            int parts = Math.Max(1, Math.Min(Rows / 16, threads * 4));
            if (threads <= 1 || parts == 1) job.Rows(0, Rows);
            else Cpu.Gemm.WorkerPool.For(parts, threads, p => job.Rows((int)((long)Rows * p / parts), (int)((long)Rows * (p + 1) / parts)));
        }
    }

    /// <summary>
    /// ggml's quantize_row_q8_0 on activations: per block of 32, d = amax / 127 and q = round(x / d) (half away
    /// from zero), kept with d as float32 and sum = d * (sum of q), the dequantised block sum.
    /// </summary>
    public static void QuantizeActivations(ReadOnlySpan<float> x, Span<sbyte> q, Span<float> scale, Span<float> sum)
    {
        if (x.Length % 32 != 0 || q.Length != x.Length || scale.Length != x.Length / 32 || sum.Length != x.Length / 32)
            throw new ArgumentException($"QuantizeActivations: {x.Length} values need {x.Length} codes and {x.Length / 32} scales and sums");
        for (int b = 0; b < scale.Length; b++)
        {
            var xb = x.Slice(32 * b, 32);
            float amax = 0;
            foreach (float v in xb) amax = MathF.Max(amax, MathF.Abs(v));
            float d = amax / 127;
            float id = d != 0 ? 1f / d : 0f;
            int total = 0;
            for (int j = 0; j < 32; j++)
            {
                int v = (int)MathF.Round(xb[j] * id, MidpointRounding.AwayFromZero);
                q[32 * b + j] = (sbyte)v;
                total += v;
            }
            scale[b] = d;
            sum[b] = d * total;
        }
    }

    /// <summary>Per-thread buffers for the quantised activations, grown as needed.</summary>
    private sealed class Activations
    {
        [ThreadStatic] private static Activations? current;
        public sbyte[] Q = [];
        public float[] Scale = [], Sum = [];

        public static Activations For(int values, int blocks)
        {
            var a = current ??= new Activations();
            if (a.Q.Length < values) a.Q = GC.AllocateArray<sbyte>(values, pinned: true);
            if (a.Scale.Length < blocks)
            {
                a.Scale = GC.AllocateArray<float>(blocks, pinned: true);
                a.Sum = GC.AllocateArray<float>(blocks, pinned: true);
            }
            return a;
        }
    }

    private readonly unsafe struct Job(QuantizedMatrix m, sbyte* q, float* scale, float* sum, float* y, int tokens)
    {
        public void Rows(int from, int to)
        {
            int blocks = m.Columns / 32;
            fixed (byte* w = m.data)
            fixed (float* half = HalfToFloat)
            {
                for (int r = from; r < to; r++)
                {
                    byte* row = w + (long)r * m.RowBytes;
                    for (int t = 0; t < tokens; t++)
                        y[(long)t * m.Rows + r] = Dot(m.Format, row, q + (long)t * m.Columns, scale + (long)t * blocks, sum + (long)t * blocks, m.Columns, half);
                }
            }
        }
    }

    /// <summary>One row's blocks dotted with quantised activations (codes q, per-32 scales and dequantised sums; n weights).</summary>
    internal static unsafe float Dot(QuantFormat format, byte* row, sbyte* q, float* scale, float* sum, int n, float* half)
    {
        if (Avx2.IsSupported && Fma.IsSupported)
        {
            return format switch
            {
                QuantFormat.Q8_0 => DotQ8_0Avx2(row, q, scale, n, half),
                QuantFormat.Q4_0 => DotQ4_0Avx2(row, q, scale, sum, n, half),
                QuantFormat.Q4_K => DotQ4_KAvx2(row, q, scale, sum, n, half),
                _ => DotQ6_KAvx2(row, q, scale, n, half),
            };
        }
        return DotScalar(format, row, q, scale, n);
    }

    /// <summary>The portable kernel: dequantise one weight block at a time, multiply by the dequantised activations.</summary>
    internal static unsafe float DotScalar(QuantFormat format, byte* row, sbyte* q, float* scale, int n)
    {
        int be = QuantFormats.BlockElements(format), bb = QuantFormats.BlockBytes(format);
        Span<float> w = stackalloc float[256];
        float total = 0;
        for (int b = 0; b < n / be; b++)
        {
            var block = w[..be];
            QuantFormats.Dequantize(format, new ReadOnlySpan<byte>(row + (long)b * bb, bb), block);
            for (int i = 0; i < be; i++)
            {
                int at = b * be + i;
                total += block[i] * (q[at] * scale[at / 32]);
            }
        }
        return total;
    }

    /// <summary>Every half-precision bit pattern as float32 (256 KB): one load per block scale instead of a software conversion.</summary>
    private static readonly float[] HalfToFloat = BuildHalfTable();

    private static float[] BuildHalfTable()
    {
        var table = GC.AllocateArray<float>(65536, pinned: true);
        for (int i = 0; i < table.Length; i++) table[i] = (float)BitConverter.UInt16BitsToHalf((ushort)i);
        return table;
    }


    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum(Vector256<float> v)
    {
        var s = Sse.Add(v.GetLower(), v.GetUpper());
        s = Sse.Add(s, Sse.MoveHighToLow(s, s));
        s = Sse.AddScalar(s, Sse.Shuffle(s, s, 1));
        return s.ToScalar();
    }

    /// <summary>Sum of products of 32 unsigned bytes by 32 signed bytes, as 8 int32 lanes (vpmaddubsw, vpmaddwd).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotBytes(Vector256<byte> unsigned, Vector256<sbyte> signed) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(unsigned, signed), Vector256.Create((short)1));

    // Q8_0: w = dw q_w, x = dx q_x, so a block adds dw dx sum(q_w q_x); the signs move onto q_x so that
    // vpmaddubsw sees |q_w| unsigned (at most 128 * 127 * 2 per pair: no saturation).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe float DotQ8_0Avx2(byte* row, sbyte* q, float* scale, int n, float* half)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < n / 32; b++, row += 34, q += 32)
        {
            var w = Avx.LoadVector256((sbyte*)(row + 2));
            var x = Avx.LoadVector256(q);
            var dot = DotBytes(Avx2.Abs(w), Avx2.Sign(x, w));
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(dot), Vector256.Create(half[*(ushort*)row] * scale[b]), acc);
        }
        return Sum(acc);
    }

    // Q4_0: byte j holds weight j (low nibble) and j + 16 (high), stored as q + 8; a block adds
    // dw (dx sum(q_stored q_x) - 8 dx sum(q_x)) = dw (dx dot - 8 blockSum).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe float DotQ4_0Avx2(byte* row, sbyte* q, float* scale, float* sum, int n, float* half)
    {
        var acc = Vector256<float>.Zero;
        float correction = 0;
        var mask = Vector128.Create((byte)15);
        for (int b = 0; b < n / 32; b++, row += 18, q += 32)
        {
            float d = half[*(ushort*)row];
            var bytes = Sse2.LoadVector128(row + 2);
            var w = Vector256.Create(Sse2.And(bytes, mask), Sse2.And(Sse2.ShiftRightLogical(bytes.AsUInt16(), 4).AsByte(), mask));
            var dot = DotBytes(w, Avx.LoadVector256(q));
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(dot), Vector256.Create(d * scale[b]), acc);
            correction += d * sum[b];
        }
        return Sum(acc) - 8 * correction;
    }

    // Q4_K: 32 bytes hold groups g (low nibbles) and g + 1 (high nibbles) of 32 weights each; weight = d sc q - dmin m,
    // so a group adds d sc dx dot(q, q_x) - dmin m sum_g.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe float DotQ4_KAvx2(byte* row, sbyte* q, float* scale, float* sum, int n, float* half)
    {
        var acc = Vector256<float>.Zero;
        float mins = 0;
        var mask = Vector256.Create((byte)15);
        for (int b = 0; b < n / 256; b++, row += 144)
        {
            float d = half[*(ushort*)row], dmin = half[*(ushort*)(row + 2)];
            byte* s = row + 4;
            byte* w = row + 16;
            for (int g = 0; g < 8; g += 2, w += 32, q += 64, scale += 2, sum += 2)
            {
                // ggml's get_scale_min_k4 for groups g and g + 1.
                int sc1, m1, sc2, m2;
                if (g < 4)
                {
                    sc1 = s[g] & 63; m1 = s[g + 4] & 63;
                    sc2 = s[g + 1] & 63; m2 = s[g + 5] & 63;
                }
                else
                {
                    sc1 = (s[g + 4] & 0xF) | ((s[g - 4] >> 6) << 4); m1 = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
                    sc2 = (s[g + 5] & 0xF) | ((s[g - 3] >> 6) << 4); m2 = (s[g + 5] >> 4) | ((s[g + 1] >> 6) << 4);
                }
                var bytes = Avx.LoadVector256(w);
                var lo = DotBytes(Avx2.And(bytes, mask), Avx.LoadVector256(q));
                var hi = DotBytes(Avx2.And(Avx2.ShiftRightLogical(bytes.AsUInt16(), 4).AsByte(), mask), Avx.LoadVector256(q + 32));
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(lo), Vector256.Create(d * sc1 * scale[0]), acc);
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(hi), Vector256.Create(d * sc2 * scale[1]), acc);
                mins += dmin * m1 * sum[0] + dmin * m2 * sum[1];
            }
        }
        return Sum(acc) - mins;
    }

    // Q6_K: each half of a block (128 weights) packs low nibbles in ql[64], 2 high bits in qh[32], weight =
    // d sc (q - 32) with an int8 scale per 16 weights. Chunk k of 32 weights: q = nibble(ql[32 (k & 1) ...], k >> 1) |
    // (bits 2k..2k+1 of qh) << 4; its two groups of 16 use scales sc[2k], sc[2k + 1].
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe float DotQ6_KAvx2(byte* row, sbyte* q, float* scale, int n, float* half)
    {
        var acc = Vector256<float>.Zero;
        var low4 = Vector256.Create((byte)15);
        var low2 = Vector256.Create((byte)3);
        var offset = Vector256.Create((byte)32);
        for (int b = 0; b < n / 256; b++, row += 210)
        {
            float d = half[*(ushort*)(row + 208)];
            for (int h = 0; h < 2; h++)
            {
                byte* ql = row + 64 * h;
                var qh = Avx.LoadVector256(row + 128 + 32 * h);
                sbyte* sc = (sbyte*)(row + 192 + 8 * h);
                var ql0 = Avx.LoadVector256(ql);
                var ql1 = Avx.LoadVector256(ql + 32);
                var hi0 = Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte();
                var hi1 = Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte();
                var c0 = Codes(ql0, qh, low4, low2);
                var c1 = Codes(ql1, Avx2.ShiftRightLogical(qh.AsUInt16(), 2).AsByte(), low4, low2);
                var c2 = Codes(hi0, Avx2.ShiftRightLogical(qh.AsUInt16(), 4).AsByte(), low4, low2);
                var c3 = Codes(hi1, Avx2.ShiftRightLogical(qh.AsUInt16(), 6).AsByte(), low4, low2);
                acc = Chunk(c0, q, sc[0], sc[1], d * scale[0], offset, acc);
                acc = Chunk(c1, q + 32, sc[2], sc[3], d * scale[1], offset, acc);
                acc = Chunk(c2, q + 64, sc[4], sc[5], d * scale[2], offset, acc);
                acc = Chunk(c3, q + 96, sc[6], sc[7], d * scale[3], offset, acc);
                q += 128;
                scale += 4;
            }
        }
        return Sum(acc);
    }

    /// <summary>6-bit codes: the low nibble of each byte of <paramref name="nibbles"/> | the low 2 bits of <paramref name="high"/> &lt;&lt; 4.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Codes(Vector256<byte> nibbles, Vector256<byte> high, Vector256<byte> low4, Vector256<byte> low2) =>
        Avx2.Or(Avx2.And(nibbles, low4), Avx2.ShiftLeftLogical(Avx2.And(high, low2).AsUInt16(), 4).AsByte());

    /// <summary>acc += scale * sum over 32 weights of sc_g (code - 32) x, with sc0 for the first 16 and sc1 for the rest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> Chunk(Vector256<byte> codes, sbyte* q, sbyte sc0, sbyte sc1, float scale, Vector256<byte> offset, Vector256<float> acc)
    {
        var x = Avx.LoadVector256(q);
        var pairs = Avx2.Subtract(Avx2.MultiplyAddAdjacent(codes, x), Avx2.MultiplyAddAdjacent(offset, x));
        var dot = Avx2.MultiplyAddAdjacent(pairs, Vector256.Create(Vector128.Create((short)sc0), Vector128.Create((short)sc1)));
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(dot), Vector256.Create(scale), acc);
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
