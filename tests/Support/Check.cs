namespace UioLlm.Tests.Support;

/// <summary>Numeric comparisons with messages that say where and by how much values differ.</summary>
public static class Check
{
    /// <summary>|actual - expected| &lt;= atol + rtol * |expected| elementwise.</summary>
    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double atol, double rtol, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        int worst = -1;
        double worstExcess = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (double.IsNaN(a) != double.IsNaN(e)) { worst = i; worstExcess = double.PositiveInfinity; break; }
            if (double.IsInfinity(e) && e == a) continue;
            double excess = Math.Abs(a - e) - (atol + rtol * Math.Abs(e));
            if (excess > worstExcess) { worstExcess = excess; worst = i; }
        }
        if (worst >= 0)
            Assert.Fail($"{what}: element {worst} is {actual[worst]:G9}, expected {expected[worst]:G9} (atol {atol:G3}, rtol {rtol:G3}; {Count(expected, actual, atol, rtol)} of {expected.Length} outside)");
    }

    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double atol, double rtol, string what)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        Close(e, actual, atol, rtol, what);
    }

    /// <summary>Whole-vector check: ||actual - expected|| / ||expected|| &lt;= tol (for gradients).</summary>
    public static void RelativeNorm(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double tol, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = actual[i] - expected[i];
            num += d * d;
            den += expected[i] * expected[i];
        }
        double rel = Math.Sqrt(num) / Math.Max(Math.Sqrt(den), 1e-30);
        Assert.True(den > 0 || num == 0, $"{what}: expected gradient is all zero but actual has norm {Math.Sqrt(num):G3}");
        Assert.True(rel <= tol, $"{what}: relative error {rel:G3} exceeds {tol:G3} (||expected|| = {Math.Sqrt(den):G6})");
    }

    private static int Count(ReadOnlySpan<double> e, ReadOnlySpan<float> a, double atol, double rtol)
    {
        int c = 0;
        for (int i = 0; i < e.Length; i++)
            if (!(Math.Abs(a[i] - e[i]) <= atol + rtol * Math.Abs(e[i]))) c++;
        return c;
    }

    public static double[] ToDouble(ReadOnlySpan<float> a)
    {
        var d = new double[a.Length];
        for (int i = 0; i < a.Length; i++) d[i] = a[i];
        return d;
    }
}

/// <summary>
/// Finite differences on double-precision reference functions. A backward kernel is checked by
/// projecting the output on a fixed random cotangent g: L(x) = sum(f(x) * g), whose gradient the kernel
/// computes from dy = g; central differences of L give the numeric gradient.
/// </summary>
public static class FiniteDifference
{
    /// <summary>Central-difference gradient of scalar <paramref name="loss"/> at <paramref name="x"/> (x is restored).</summary>
    public static double[] Gradient(Func<double[], double> loss, double[] x, double h = 1e-5)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + h;
            double up = loss(x);
            x[i] = keep - h;
            double down = loss(x);
            x[i] = keep;
            g[i] = (up - down) / (2 * h);
        }
        return g;
    }

    /// <summary>sum_i f[i] * g[i] in double.</summary>
    public static double Dot(ReadOnlySpan<double> f, ReadOnlySpan<float> g)
    {
        double s = 0;
        for (int i = 0; i < f.Length; i++) s += f[i] * g[i];
        return s;
    }
}
