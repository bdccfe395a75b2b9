namespace UioLlm.Tests.Reference;

/// <summary>RMS norm over the last axis: y = x / sqrt(mean(x^2) + eps) * w.</summary>
public static class RmsNormReference
{
    public static double[] Forward(double[] x, double[] w, double eps, out double[] rstd)
    {
        int d = w.Length, rows = x.Length / d;
        var y = new double[x.Length];
        rstd = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < d; i++) ss += x[r * d + i] * x[r * d + i];
            rstd[r] = 1.0 / Math.Sqrt(ss / d + eps);
            for (int i = 0; i < d; i++) y[r * d + i] = x[r * d + i] * rstd[r] * w[i];
        }
        return y;
    }
}
