namespace UioLlm.Tests.Reference;

/// <summary>Plain double-precision matrix products, written for clarity (triple loops, explicit indexing).</summary>
public static class MatMulReference
{
    /// <summary>Element (i, p) of op(A) where A is stored row-major as [rows, cols] = op ? [K, M] : [M, K].</summary>
    public static double At(IReadOnlyList<double> a, int cols, bool trans, int i, int p) =>
        trans ? a[p * cols + i] : a[i * cols + p];

    /// <summary>
    /// c = alpha op(a) op(b) + beta c0 for one m x n x k product; a is [M,K] or [K,M], b is [K,N] or [N,K].
    /// When beta is 0, c0 is not read (so NaN there is ignored).
    /// </summary>
    public static double[] Gemm(IReadOnlyList<double> a, IReadOnlyList<double> b, int m, int n, int k,
        bool transA = false, bool transB = false, double alpha = 1, double beta = 0, IReadOnlyList<double>? c0 = null)
    {
        int colsA = transA ? m : k, colsB = transB ? k : n;
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                for (int p = 0; p < k; p++)
                    sum += At(a, colsA, transA, i, p) * At(b, colsB, transB, p, j);
                c[i * n + j] = alpha * sum + (beta == 0 ? 0 : beta * c0![i * n + j]);
            }
        return c;
    }

    /// <summary>
    /// Batched product: a and b hold <paramref name="batch"/> matrices each, or one shared matrix when
    /// their flag says broadcast.
    /// </summary>
    public static double[] Batched(double[] a, bool broadcastA, double[] b, bool broadcastB, int batch, int m, int n, int k,
        bool transA = false, bool transB = false)
    {
        var c = new double[batch * m * n];
        for (int e = 0; e < batch; e++)
        {
            var ae = broadcastA ? a : a[(e * m * k)..((e + 1) * m * k)];
            var be = broadcastB ? b : b[(e * k * n)..((e + 1) * k * n)];
            Gemm(ae, be, m, n, k, transA, transB).CopyTo(c, e * m * n);
        }
        return c;
    }
}

/// <summary>The LoRA projection written out directly: y = x W^T + scale (x A^T) B^T.</summary>
public static class LoraReference
{
    /// <summary>y [T, out] and xa [T, r] for x [T, in], w [out, in], a [r, in], b [out, r].</summary>
    public static (double[] Y, double[] Xa) Forward(double[] x, double[] w, double[] a, double[] b, double scale,
        int t, int inDim, int outDim, int rank)
    {
        var xa = new double[t * rank];
        for (int i = 0; i < t; i++)
            for (int r = 0; r < rank; r++)
            {
                double s = 0;
                for (int p = 0; p < inDim; p++) s += x[i * inDim + p] * a[r * inDim + p];
                xa[i * rank + r] = s;
            }
        var y = new double[t * outDim];
        for (int i = 0; i < t; i++)
            for (int o = 0; o < outDim; o++)
            {
                double s = 0;
                for (int p = 0; p < inDim; p++) s += x[i * inDim + p] * w[o * inDim + p];
                double low = 0;
                for (int r = 0; r < rank; r++) low += xa[i * rank + r] * b[o * rank + r];
                y[i * outDim + o] = s + scale * low;
            }
        return (y, xa);
    }
}
