namespace UioLlm.Tests.Reference;

/// <summary>Plain double-precision elementwise ops and reductions.</summary>
public static class ElementwiseReference
{
    public static double[] Map(float[] a, Func<double, double> f)
    {
        var y = new double[a.Length];
        for (int i = 0; i < a.Length; i++) y[i] = f(a[i]);
        return y;
    }

    public static double[] Zip(float[] a, float[] b, Func<double, double, double> f)
    {
        var y = new double[a.Length];
        for (int i = 0; i < a.Length; i++) y[i] = f(a[i], b[i]);
        return y;
    }

    /// <summary>sqrt(sum of squares of every element of every array).</summary>
    public static double GlobalNorm(IEnumerable<float[]> arrays)
    {
        double s = 0;
        foreach (var a in arrays)
            foreach (float v in a) s += (double)v * v;
        return Math.Sqrt(s);
    }
}
