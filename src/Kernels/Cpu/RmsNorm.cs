using System.Buffers;
using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    /// <summary>Rows x d below which the norms run on the calling thread.</summary>
    private const int RmsNormParallelElements = 1 << 16;

    public void RmsNorm(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps)
    {
        const string op = "RmsNorm";
        int rows = CheckRmsNorm(op, x, weight, rstd, eps);
        OpsCheck.On(op, x.Accelerator, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        OpsCheck.Disjoint(op, x, "x", rstd, "rstd");
        OpsCheck.Disjoint(op, y, "y", rstd, "rstd");

        int d = weight.Length;
        float* px = x.Pointer, pw = weight.Pointer, py = y.Pointer, pr = rstd.Pointer;
        if ((long)rows * d < RmsNormParallelElements || rows < 2) RmsNormRows(px, pw, py, pr, 0, rows, d, eps);
        else RmsNormParallel(px, pw, py, pr, rows, d, eps);
    }

    // Separate so the serial path does not allocate the lambda's closure.
    private void RmsNormParallel(float* x, float* w, float* y, float* rstd, int rows, int d, float eps) =>
        OpsParallel.Ranges(Threads, rows, (r0, n) => RmsNormRows(x, w, y, rstd, r0, n, d, eps));

    public void RmsNormBackward(Tensor x, Tensor weight, Tensor rstd, Tensor dy, Tensor? dx, Tensor? dWeight)
    {
        const string op = "RmsNormBackward";
        int rows = CheckRmsNorm(op, x, weight, rstd, eps: 0f);
        var acc = x.Accelerator;
        OpsCheck.On(op, acc, dy, "dy");
        Guard.SameShape(op, x, "x", dy, "dy");
        if (dx is not null)
        {
            OpsCheck.On(op, acc, dx, "dx");
            Guard.SameShape(op, x, "x", dx, "dx");
            OpsCheck.Disjoint(op, x, "x", dx, "dx");
            OpsCheck.Disjoint(op, dy, "dy", dx, "dx");
        }
        if (dWeight is not null)
        {
            OpsCheck.On(op, acc, dWeight, "dWeight");
            Guard.SameShape(op, weight, "weight", dWeight, "dWeight");
            OpsCheck.Disjoint(op, weight, "weight", dWeight, "dWeight");
        }
        if (dx is null && dWeight is null) return;

        int d = weight.Length;
        float* px = x.Pointer, pw = weight.Pointer, pr = rstd.Pointer, pdy = dy.Pointer;
        float* pdx = dx is null ? null : dx.Pointer;
        float* pdw = dWeight is null ? null : dWeight.Pointer;
        if ((long)rows * d < RmsNormParallelElements || rows < 2) RmsNormBackwardRows(px, pw, pr, pdy, pdx, pdw, 0, rows, d);
        else RmsNormBackwardParallel(px, pw, pr, pdy, pdx, pdw, rows, d);
    }

    /// <summary>Parallel over row ranges; each range sums its dWeight into a private row, reduced afterwards.</summary>
    private void RmsNormBackwardParallel(float* px, float* pw, float* pr, float* pdy, float* pdx, float* pdw, int rows, int d)
    {
        int parts = Math.Min(Threads, rows);
        float[]? partial = pdw is null ? null : ArrayPool<float>.Shared.Rent(parts * d);
        try
        {
            fixed (float* pp = partial)
            {
                float* basePartial = pp;
                if (basePartial is not null) new Span<float>(basePartial, parts * d).Clear();
                ParallelFor(parts, k =>
                {
                    int r0 = (int)((long)rows * k / parts), r1 = (int)((long)rows * (k + 1) / parts);
                    float* mine = basePartial is null ? null : basePartial + (long)k * d;
                    RmsNormBackwardRows(px, pw, pr, pdy, pdx, mine, r0, r1 - r0, d);
                });
                if (basePartial is not null)
                    for (int k = 0; k < parts; k++) BinaryRange(ElementOp.Axpy, basePartial + (long)k * d, pdw, pdw, d, 1f);
            }
        }
        finally
        {
            if (partial is not null) ArrayPool<float>.Shared.Return(partial);
        }
    }

    /// <summary>Shared checks; returns the number of rows (x.Length / d).</summary>
    internal static int CheckRmsNorm(string op, Tensor x, Tensor weight, Tensor rstd, float eps, bool host = true)
    {
        var acc = OpsCheck.First(op, x, "x", host);
        OpsCheck.On(op, acc, weight, "weight");
        OpsCheck.On(op, acc, rstd, "rstd");
        Guard.Rank(op, weight, "weight", 1, "[d]");
        int d = weight.Length;
        Guard.Positive(op, d, "d");
        if (x.Rank < 1 || x.Dim(-1) != d)
            throw new ArgumentException($"{op}: x has shape {x.ShapeString} but weight has shape {weight.ShapeString}; the last axis of x must be {d}", nameof(x));
        if (!(eps >= 0f) || float.IsInfinity(eps))
            throw new ArgumentOutOfRangeException(nameof(eps), eps, $"{op}: eps must be a finite number >= 0");
        int rows = x.Length / d;
        Guard.Length(op, rstd, "rstd", rows);
        return rows;
    }

    private static void RmsNormRows(float* x, float* w, float* y, float* rstd, int row0, int count, int d, float eps)
    {
        switch (VectorMath.Width)
        {
            case 512: RmsNormLoop<Lanes512, Vector512<float>>(x, w, y, rstd, row0, count, d, eps); break;
            case 256: RmsNormLoop<Lanes256, Vector256<float>>(x, w, y, rstd, row0, count, d, eps); break;
            default: RmsNormLoop<Lanes128, Vector128<float>>(x, w, y, rstd, row0, count, d, eps); break;
        }
    }

    private static void RmsNormLoop<S, TV>(float* x, float* w, float* y, float* rstd, int row0, int count, int d, float eps)
        where S : ISimdLanes<TV> where TV : struct
    {
        for (int row = row0; row < row0 + count; row++)
        {
            float* xr = x + (long)row * d, yr = y + (long)row * d;
            float r = (float)(1.0 / Math.Sqrt(SumOfProducts<S, TV>(xr, xr, d) / d + eps));
            rstd[row] = r;
            var vr = S.Splat(r);
            int i = 0;
            for (; i <= d - S.Count; i += S.Count) S.Store(S.Mul(S.Mul(S.Load(xr + i), vr), S.Load(w + i)), yr + i);
            for (; i < d; i++) yr[i] = xr[i] * r * w[i];
        }
    }

    private static void RmsNormBackwardRows(float* x, float* w, float* rstd, float* dy, float* dx, float* dw, int row0, int count, int d)
    {
        switch (VectorMath.Width)
        {
            case 512: RmsNormBackwardLoop<Lanes512, Vector512<float>>(x, w, rstd, dy, dx, dw, row0, count, d); break;
            case 256: RmsNormBackwardLoop<Lanes256, Vector256<float>>(x, w, rstd, dy, dx, dw, row0, count, d); break;
            default: RmsNormBackwardLoop<Lanes128, Vector128<float>>(x, w, rstd, dy, dx, dw, row0, count, d); break;
        }
    }

    /// <summary>
    /// With y = x r w and r = (mean(x^2) + eps)^-1/2:
    /// dx += r w dy - x r^3 / d * sum(dy w x), and dw += r dy x.
    /// </summary>
    private static void RmsNormBackwardLoop<S, TV>(float* x, float* w, float* rstd, float* dy, float* dx, float* dw, int row0, int count, int d)
        where S : ISimdLanes<TV> where TV : struct
    {
        int n = S.Count;
        for (int row = row0; row < row0 + count; row++)
        {
            float* xr = x + (long)row * d, dyr = dy + (long)row * d;
            float r = rstd[row];
            if (dx is not null)
            {
                float* dxr = dx + (long)row * d;
                // dot = sum(dy w x), accumulated in vector lanes.
                var dotAcc = S.Splat(0f);
                int i = 0;
                for (; i <= d - n; i += n) dotAcc = S.MulAdd(S.Mul(S.Load(dyr + i), S.Load(w + i)), S.Load(xr + i), dotAcc);
                double dot = S.SumAcross(dotAcc);
                for (; i < d; i++) dot += dyr[i] * w[i] * xr[i];
                float coef = (float)(-dot * r * r * r / d);
                TV vr = S.Splat(r), vc = S.Splat(coef);
                for (i = 0; i <= d - n; i += n)
                {
                    var g = S.MulAdd(S.Mul(vr, S.Load(w + i)), S.Load(dyr + i), S.Load(dxr + i));
                    S.Store(S.MulAdd(vc, S.Load(xr + i), g), dxr + i);
                }
                for (; i < d; i++) dxr[i] += r * w[i] * dyr[i] + coef * xr[i];
            }
            if (dw is not null)
            {
                var vr = S.Splat(r);
                int i = 0;
                for (; i <= d - n; i += n) S.Store(S.MulAdd(S.Mul(S.Load(dyr + i), S.Load(xr + i)), vr, S.Load(dw + i)), dw + i);
                for (; i < d; i++) dw[i] += dyr[i] * xr[i] * r;
            }
        }
    }

    /// <summary>sum(a[i] * b[i]) over n elements with two vector accumulators, returned in double.</summary>
    private static double SumOfProducts<S, TV>(float* a, float* b, int n) where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, i = 0;
        TV acc0 = S.Splat(0f), acc1 = S.Splat(0f);
        for (; i <= n - 2 * w; i += 2 * w)
        {
            acc0 = S.MulAdd(S.Load(a + i), S.Load(b + i), acc0);
            acc1 = S.MulAdd(S.Load(a + i + w), S.Load(b + i + w), acc1);
        }
        for (; i <= n - w; i += w) acc0 = S.MulAdd(S.Load(a + i), S.Load(b + i), acc0);
        double s = S.SumAcross(S.Add(acc0, acc1));
        for (; i < n; i++) s += (double)a[i] * b[i];
        return s;
    }
}
