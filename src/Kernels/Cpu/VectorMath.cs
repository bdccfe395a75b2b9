using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu;

/// <summary>
/// One SIMD width seen through a common set of static operations, so each kernel loop is written once
/// (generic over the width) and the JIT specialises it for <see cref="Lanes128"/>, <see cref="Lanes256"/>
/// and <see cref="Lanes512"/>. <typeparamref name="TV"/> is the matching Vector*&lt;float&gt; type.
/// </summary>
internal unsafe interface ISimdLanes<TV> where TV : struct
{
    static abstract int Count { get; }
    static abstract TV Zero { get; }
    static abstract TV Load(float* p);
    static abstract void Store(TV v, float* p);
    static abstract TV Splat(float x);
    static abstract TV Add(TV a, TV b);
    static abstract TV Sub(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    static abstract TV Div(TV a, TV b);

    /// <summary>a * b + c (fused where the hardware has FMA).</summary>
    static abstract TV MulAdd(TV a, TV b, TV c);

    /// <summary>IEEE maximum / minimum: a NaN in either operand propagates.</summary>
    static abstract TV Max(TV a, TV b);
    static abstract TV Min(TV a, TV b);
    static abstract TV Sqrt(TV a);

    /// <summary>value where x &gt;= limit, else 0 (lane by lane).</summary>
    static abstract TV ZeroBelow(TV value, TV x, TV limit);

    /// <summary>Round to the nearest integer (ties to even), kept as float.</summary>
    static abstract TV Round(TV a);

    /// <summary>2^n for integral n in [-126, 127], built directly in the exponent bits.</summary>
    static abstract TV Pow2(TV n);

    /// <summary>Swap each even lane with its odd neighbour: (a0, a1, a2, a3) -> (a1, a0, a3, a2).</summary>
    static abstract TV SwapPairs(TV a);

    static abstract float SumAcross(TV a);
    static abstract float MaxAcross(TV a);

    /// <summary>Sum of squares of p[0..n) accumulated in double lanes.</summary>
    static abstract double SumSquares(float* p, int n);
}

internal readonly unsafe struct Lanes128 : ISimdLanes<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ZeroBelow(Vector128<float> value, Vector128<float> x, Vector128<float> limit) =>
        value & Vector128.GreaterThanOrEqual(x, limit);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector128<float> v, float* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Splat(float x) => Vector128.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sub(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Div(Vector128<float> a, Vector128<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> MulAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Min(Vector128<float> a, Vector128<float> b) => Vector128.Min(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sqrt(Vector128<float> a) => Vector128.Sqrt(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Round(Vector128<float> a) => Vector128.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Pow2(Vector128<float> n) =>
        Vector128.ShiftLeft(Vector128.ConvertToInt32Native(n) + Vector128.Create(127), 23).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> SwapPairs(Vector128<float> a) => Vector128.Shuffle(a, Vector128.Create(1, 0, 3, 2));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float SumAcross(Vector128<float> a) => Vector128.Sum(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector128<float> a)
    {
        var m = Vector128.Max(a, Vector128.Shuffle(a, Vector128.Create(2, 3, 0, 1)));
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(1, 0, 3, 2)));
        return m.ToScalar();
    }

    public static double SumSquares(float* p, int n)
    {
        var acc = Vector128<double>.Zero;
        int i = 0;
        for (; i <= n - 4; i += 4)
        {
            var (lo, hi) = Vector128.Widen(Vector128.Load(p + i));
            acc = Vector128.MultiplyAddEstimate(lo, lo, acc);
            acc = Vector128.MultiplyAddEstimate(hi, hi, acc);
        }
        double s = Vector128.Sum(acc);
        for (; i < n; i++) s += (double)p[i] * p[i];
        return s;
    }
}

internal readonly unsafe struct Lanes256 : ISimdLanes<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ZeroBelow(Vector256<float> value, Vector256<float> x, Vector256<float> limit) =>
        value & Vector256.GreaterThanOrEqual(x, limit);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector256<float> v, float* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Splat(float x) => Vector256.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Div(Vector256<float> a, Vector256<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Min(Vector256<float> a, Vector256<float> b) => Vector256.Min(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sqrt(Vector256<float> a) => Vector256.Sqrt(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Round(Vector256<float> a) => Vector256.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Pow2(Vector256<float> n) =>
        Vector256.ShiftLeft(Vector256.ConvertToInt32Native(n) + Vector256.Create(127), 23).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> SwapPairs(Vector256<float> a) => Vector256.Shuffle(a, Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float SumAcross(Vector256<float> a) => Lanes128.SumAcross(a.GetLower() + a.GetUpper());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(Vector256<float> a) => Lanes128.MaxAcross(Vector128.Max(a.GetLower(), a.GetUpper()));

    public static double SumSquares(float* p, int n)
    {
        var acc0 = Vector256<double>.Zero;
        var acc1 = Vector256<double>.Zero;
        int i = 0;
        for (; i <= n - 8; i += 8)
        {
            var (lo, hi) = Vector256.Widen(Vector256.Load(p + i));
            acc0 = Vector256.MultiplyAddEstimate(lo, lo, acc0);
            acc1 = Vector256.MultiplyAddEstimate(hi, hi, acc1);
        }
        double s = Vector256.Sum(acc0 + acc1);
        for (; i < n; i++) s += (double)p[i] * p[i];
        return s;
    }
}

internal readonly unsafe struct Lanes512 : ISimdLanes<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ZeroBelow(Vector512<float> value, Vector512<float> x, Vector512<float> limit) =>
        value & Vector512.GreaterThanOrEqual(x, limit);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector512<float> v, float* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Splat(float x) => Vector512.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Div(Vector512<float> a, Vector512<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> MulAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Min(Vector512<float> a, Vector512<float> b) => Vector512.Min(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sqrt(Vector512<float> a) => Vector512.Sqrt(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Round(Vector512<float> a) => Vector512.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Pow2(Vector512<float> n) =>
        Vector512.ShiftLeft(Vector512.ConvertToInt32Native(n) + Vector512.Create(127), 23).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> SwapPairs(Vector512<float> a) =>
        Vector512.Shuffle(a, Vector512.Create(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float SumAcross(Vector512<float> a) => Lanes256.SumAcross(a.GetLower() + a.GetUpper());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MaxAcross(Vector512<float> a) => Lanes256.MaxAcross(Vector256.Max(a.GetLower(), a.GetUpper()));

    public static double SumSquares(float* p, int n)
    {
        var acc0 = Vector512<double>.Zero;
        var acc1 = Vector512<double>.Zero;
        int i = 0;
        for (; i <= n - 16; i += 16)
        {
            var (lo, hi) = Vector512.Widen(Vector512.Load(p + i));
            acc0 = Vector512.MultiplyAddEstimate(lo, lo, acc0);
            acc1 = Vector512.MultiplyAddEstimate(hi, hi, acc1);
        }
        double s = Vector512.Sum(acc0 + acc1);
        for (; i < n; i++) s += (double)p[i] * p[i];
        return s;
    }
}

/// <summary>
/// Vector width selection and vectorised transcendental functions shared by the elementwise, norm,
/// activation, loss and optimizer kernels.
/// </summary>
internal static class VectorMath
{
    private static volatile int width = DefaultWidth;

    /// <summary>The widest vector the hardware accelerates (512, 256 or 128 bits).</summary>
    public static int DefaultWidth =>
        Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 128;

    /// <summary>
    /// Vector width in bits the kernels use. Tests force 512 on machines without AVX-512 (the Vector512
    /// operations then run emulated) so that path is exercised everywhere.
    /// </summary>
    public static int Width
    {
        get => width;
        set => width = value is 128 or 256 or 512
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "vector width must be 128, 256 or 512 bits");
    }

    // exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]; ln 2 is split in a
    // high part exact in float and a low correction so r is accurate. exp(r) is a degree-7 minimax form
    // 1 + r + r^2 P(r) (relative error about 1e-7).
    private const float ExpHigh = 88.3762626647949f;   // largest x whose n stays at 127
    private const float ExpLow = -87.3365478515625f;   // smallest x whose n stays at -126
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2High = 0.693359375f;
    private const float Ln2Low = -2.12194440e-4f;
    private const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f;
    private const float P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;

    /// <summary>
    /// Vectorised e^x, relative error about 1e-7 on [-87.3, 88.4]. Inputs are clamped to that range, so
    /// very negative x give ~1e-38 (not 0) and very large x give ~2.4e38 (not infinity); NaN propagates.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Exp<S, TV>(TV x) where S : ISimdLanes<TV> where TV : struct
    {
        x = S.Min(S.Max(x, S.Splat(ExpLow)), S.Splat(ExpHigh));
        var n = S.Round(S.Mul(x, S.Splat(Log2E)));
        var r = S.MulAdd(n, S.Splat(-Ln2High), x);
        r = S.MulAdd(n, S.Splat(-Ln2Low), r);
        var p = S.MulAdd(S.Splat(P0), r, S.Splat(P1));
        p = S.MulAdd(p, r, S.Splat(P2));
        p = S.MulAdd(p, r, S.Splat(P3));
        p = S.MulAdd(p, r, S.Splat(P4));
        p = S.MulAdd(p, r, S.Splat(P5));
        p = S.MulAdd(p, S.Mul(r, r), S.Add(r, S.Splat(1f)));
        return S.Mul(p, S.Pow2(n));
    }

    // 2^x = 2^n * 2^f with n = round(x), |f| <= 1/2: a degree-6 Taylor form of e^(f ln 2), coefficients (ln 2)^k / k!.
    private const float E1 = 0.693147180559945f, E2 = 0.240226506959101f, E3 = 0.0555041086648216f;
    private const float E4 = 0.00961812910762848f, E5 = 0.00133335581464284f, E6 = 0.000154035303933816f;

    /// <summary>
    /// Vectorised 2^x, relative error about 1e-7; exactly 0 for x &lt; -126 (including -inf), which the
    /// online softmax relies on for masked scores. NaN propagates.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Exp2<S, TV>(TV x) where S : ISimdLanes<TV> where TV : struct
    {
        var lowest = S.Splat(-126f);
        var clamped = S.Min(S.Max(x, lowest), S.Splat(127f));
        var n = S.Round(clamped);
        var f = S.Sub(clamped, n);
        var p = S.MulAdd(S.Splat(E6), f, S.Splat(E5));
        p = S.MulAdd(p, f, S.Splat(E4));
        p = S.MulAdd(p, f, S.Splat(E3));
        p = S.MulAdd(p, f, S.Splat(E2));
        p = S.MulAdd(p, f, S.Splat(E1));
        p = S.MulAdd(p, f, S.Splat(1f));
        return S.ZeroBelow(S.Mul(p, S.Pow2(n)), x, lowest);
    }

    /// <summary>Vectorised logistic sigmoid 1 / (1 + e^-x): saturates cleanly to 0 and 1 for large |x|.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Sigmoid<S, TV>(TV x) where S : ISimdLanes<TV> where TV : struct
    {
        var one = S.Splat(1f);
        return S.Div(one, S.Add(one, Exp<S, TV>(S.Sub(S.Splat(0f), x))));
    }

    /// <summary>Scalar sigmoid for loop tails, consistent with the vector form.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sigmoid(float x) => 1f / (1f + MathF.Exp(-x));
}
