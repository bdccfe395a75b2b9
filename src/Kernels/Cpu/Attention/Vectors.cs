using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>Which vector width the attention kernels use (Auto = the widest the hardware accelerates).</summary>
internal enum AttentionSimd
{
    Auto,
    Vector128,
    Vector256,
    Vector512,
}

/// <summary>
/// The handful of float-vector operations the attention kernels need, as static abstract members so one
/// generic kernel compiles (JIT-specialised per struct) to Vector128, Vector256 or Vector512 code.
/// </summary>
internal unsafe interface IVectorOps<TV> where TV : struct
{
    static abstract int Width { get; }
    static abstract TV Zero { get; }
    static abstract TV Splat(float x);
    static abstract TV Load(float* p);
    static abstract void Store(float* p, TV v);
    static abstract TV Add(TV a, TV b);
    static abstract TV Sub(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    /// <summary>a * b + c (fused where the hardware has FMA).</summary>
    static abstract TV MulAdd(TV a, TV b, TV c);
    static abstract TV Max(TV a, TV b);
    /// <summary>2^x, relative error about 1e-7; exactly 0 for x &lt; -126 (including -inf).</summary>
    static abstract TV Exp2(TV x);
}

/// <summary>Taylor coefficients of 2^f = e^(f ln 2) on f in [-1/2, 1/2]: (ln 2)^k / k!.</summary>
internal static class Exp2Coefficients
{
    public const float C1 = 0.693147180559945f;
    public const float C2 = 0.240226506959101f;
    public const float C3 = 0.0555041086648216f;
    public const float C4 = 0.00961812910762848f;
    public const float C5 = 0.00133335581464284f;
    public const float C6 = 0.000154035303933816f;
    public const float Lowest = -126f;
    public const float Highest = 127f;
}

internal readonly unsafe struct Vec256 : IVectorOps<Vector256<float>>
{
    public static int Width => 8;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Splat(float x) => Vector256.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector256<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp2(Vector256<float> x)
    {
        var keep = Vector256.GreaterThanOrEqual(x, Vector256.Create(Exp2Coefficients.Lowest));
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(Exp2Coefficients.Lowest)), Vector256.Create(Exp2Coefficients.Highest));
        // 2^x = 2^n * 2^f with n = round(x), |f| <= 1/2; 2^n is built directly in the exponent bits.
        var n = Vector256.Round(x);
        var f = x - n;
        var p = Vector256.MultiplyAddEstimate(Vector256.Create(Exp2Coefficients.C6), f, Vector256.Create(Exp2Coefficients.C5));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(Exp2Coefficients.C4));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(Exp2Coefficients.C3));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(Exp2Coefficients.C2));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(Exp2Coefficients.C1));
        p = Vector256.MultiplyAddEstimate(p, f, Vector256.Create(1f));
        var twoToN = Vector256.ShiftLeft(Vector256.ConvertToInt32(n) + Vector256.Create(127), 23).AsSingle();
        return (p * twoToN) & keep;
    }
}

internal readonly unsafe struct Vec512 : IVectorOps<Vector512<float>>
{
    public static int Width => 16;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Splat(float x) => Vector512.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector512<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> MulAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp2(Vector512<float> x)
    {
        var keep = Vector512.GreaterThanOrEqual(x, Vector512.Create(Exp2Coefficients.Lowest));
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(Exp2Coefficients.Lowest)), Vector512.Create(Exp2Coefficients.Highest));
        var n = Vector512.Round(x);
        var f = x - n;
        var p = Vector512.MultiplyAddEstimate(Vector512.Create(Exp2Coefficients.C6), f, Vector512.Create(Exp2Coefficients.C5));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(Exp2Coefficients.C4));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(Exp2Coefficients.C3));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(Exp2Coefficients.C2));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(Exp2Coefficients.C1));
        p = Vector512.MultiplyAddEstimate(p, f, Vector512.Create(1f));
        var twoToN = Vector512.ShiftLeft(Vector512.ConvertToInt32(n) + Vector512.Create(127), 23).AsSingle();
        return (p * twoToN) & keep;
    }
}

internal readonly unsafe struct Vec128 : IVectorOps<Vector128<float>>
{
    public static int Width => 4;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Splat(float x) => Vector128.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector128<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sub(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> MulAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp2(Vector128<float> x)
    {
        var keep = Vector128.GreaterThanOrEqual(x, Vector128.Create(Exp2Coefficients.Lowest));
        x = Vector128.Min(Vector128.Max(x, Vector128.Create(Exp2Coefficients.Lowest)), Vector128.Create(Exp2Coefficients.Highest));
        var n = Vector128.Round(x);
        var f = x - n;
        var p = Vector128.MultiplyAddEstimate(Vector128.Create(Exp2Coefficients.C6), f, Vector128.Create(Exp2Coefficients.C5));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(Exp2Coefficients.C4));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(Exp2Coefficients.C3));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(Exp2Coefficients.C2));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(Exp2Coefficients.C1));
        p = Vector128.MultiplyAddEstimate(p, f, Vector128.Create(1f));
        var twoToN = Vector128.ShiftLeft(Vector128.ConvertToInt32(n) + Vector128.Create(127), 23).AsSingle();
        return (p * twoToN) & keep;
    }
}
