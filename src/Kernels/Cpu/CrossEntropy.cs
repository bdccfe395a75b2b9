using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    /// <summary>Rows x vocabulary below which the loss stays on the calling thread.</summary>
    private const int CrossEntropyParallelElements = 1 << 15;

    public float CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, int ignoreIndex = -100)
    {
        const string op = "CrossEntropy";
        int valid = CheckCrossEntropy(op, logits, targets, lse, ignoreIndex);
        OpsCheck.Disjoint(op, logits, "logits", lse, "lse");
        int rows = targets.Length, vocab = logits.Dim(-1);
        float* x = logits.Pointer, l = lse.Pointer;
        double total;
        fixed (int* t = targets)
        {
            total = (long)rows * vocab < CrossEntropyParallelElements || rows < 2
                ? CrossEntropyRows(x, t, l, 0, rows, vocab, ignoreIndex)
                : CrossEntropyParallel(x, t, l, rows, vocab, ignoreIndex);
        }
        return valid == 0 ? 0f : (float)(total / valid);
    }

    public void CrossEntropyBackward(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float dLoss = 1f, int ignoreIndex = -100)
    {
        const string op = "CrossEntropyBackward";
        int valid = CheckCrossEntropy(op, logits, targets, lse, ignoreIndex);
        OpsCheck.On(op, logits.Accelerator, dLogits, "dLogits");
        Guard.SameShape(op, logits, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, logits, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, lse, "lse", dLogits, "dLogits");
        Guard.Finite(op, dLoss, nameof(dLoss));
        if (valid == 0) return;

        int rows = targets.Length, vocab = logits.Dim(-1);
        float scale = dLoss / valid;
        float* x = logits.Pointer, l = lse.Pointer, dx = dLogits.Pointer;
        fixed (int* t = targets)
        {
            if ((long)rows * vocab < CrossEntropyParallelElements || rows < 2)
                CrossEntropyBackwardRows(x, t, l, dx, 0, rows, vocab, ignoreIndex, scale);
            else
                CrossEntropyBackwardParallel(x, t, l, dx, rows, vocab, ignoreIndex, scale);
        }
    }

    public float CrossEntropyWithGradient(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float scale = 1f, int ignoreIndex = -100)
    {
        const string op = "CrossEntropyWithGradient";
        int valid = CheckCrossEntropy(op, logits, targets, lse, ignoreIndex);
        OpsCheck.On(op, logits.Accelerator, dLogits, "dLogits");
        Guard.SameShape(op, logits, "logits", dLogits, "dLogits");
        Guard.Writable(op, dLogits, "dLogits");
        OpsCheck.SameOrDisjoint(op, logits, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, logits, "logits", lse, "lse");
        OpsCheck.Disjoint(op, dLogits, "dLogits", lse, "lse");
        Guard.Finite(op, scale, nameof(scale));
        int rows = targets.Length, vocab = logits.Dim(-1);
        float rowScale = valid == 0 ? 0f : scale / valid;
        float* x = logits.Pointer, l = lse.Pointer, dx = dLogits.Pointer;
        double total;
        fixed (int* t = targets)
        {
            if ((long)rows * vocab < CrossEntropyParallelElements || rows < 2)
                total = LossAndGradientRows(x, t, l, dx, 0, rows, vocab, ignoreIndex, rowScale);
            else
                total = LossAndGradientParallel(x, t, l, dx, rows, vocab, ignoreIndex, rowScale);
        }
        return valid == 0 ? 0f : (float)(total / valid);
    }

    private double LossAndGradientParallel(float* x, int* t, float* l, float* dx, int rows, int vocab, int ignoreIndex, float scale) =>
        SumOverRowParts(rows, (r0, n) => LossAndGradientRows(x, t, l, dx, r0, n, vocab, ignoreIndex, scale));

    /// <summary>
    /// Per row (it stays in cache across the passes): max; exp(x - max) written to dx (which may be x) and summed;
    /// then dx scaled to scale * softmax, minus scale at the target. One exp per element; x[target] is read first.
    /// </summary>
    private static double LossAndGradientRows(float* x, int* targets, float* lse, float* dx, int row0, int count, int vocab, int ignoreIndex, float scale)
    {
        double total = 0;
        for (int row = row0; row < row0 + count; row++)
        {
            int target = targets[row];
            float* xr = x + (long)row * vocab, dr = dx + (long)row * vocab;
            if (target == ignoreIndex)
            {
                lse[row] = 0f;
                new Span<float>(dr, vocab).Clear();
                continue;
            }
            float atTarget = xr[target];
            double rowLse = VectorMath.Width switch
            {
                512 => SoftmaxGradientRow<Lanes512, Vector512<float>>(xr, dr, vocab, target, scale),
                256 => SoftmaxGradientRow<Lanes256, Vector256<float>>(xr, dr, vocab, target, scale),
                _ => SoftmaxGradientRow<Lanes128, Vector128<float>>(xr, dr, vocab, target, scale),
            };
            lse[row] = (float)rowLse;
            total += rowLse - atTarget;
        }
        return total;
    }

    /// <summary>dr = scale * (softmax(xr) - onehot(target)) with one exp per element; dr may be xr. Returns log(sum(exp(xr))).</summary>
    private static double SoftmaxGradientRow<S, TV>(float* xr, float* dr, int vocab, int target, float scale)
        where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, i;
        float max = RowMax<S, TV>(xr, vocab);
        var vm = S.Splat(max);
        TV sum0 = S.Splat(0f), sum1 = S.Splat(0f);
        for (i = 0; i <= vocab - 2 * w; i += 2 * w)
        {
            var e0 = VectorMath.Exp<S, TV>(S.Sub(S.Load(xr + i), vm));
            var e1 = VectorMath.Exp<S, TV>(S.Sub(S.Load(xr + i + w), vm));
            S.Store(e0, dr + i);
            S.Store(e1, dr + i + w);
            sum0 = S.Add(sum0, e0);
            sum1 = S.Add(sum1, e1);
        }
        for (; i <= vocab - w; i += w)
        {
            var e = VectorMath.Exp<S, TV>(S.Sub(S.Load(xr + i), vm));
            S.Store(e, dr + i);
            sum0 = S.Add(sum0, e);
        }
        double sum = S.SumAcross(S.Add(sum0, sum1));
        for (; i < vocab; i++)
        {
            float e = MathF.Exp(xr[i] - max);
            dr[i] = e;
            sum += e;
        }

        float k = (float)(scale / sum);
        var vk = S.Splat(k);
        for (i = 0; i <= vocab - w; i += w) S.Store(S.Mul(vk, S.Load(dr + i)), dr + i);
        for (; i < vocab; i++) dr[i] *= k;
        dr[target] -= scale;
        return max + Math.Log(sum);
    }

    /// <summary>Shared checks; returns the number of rows whose target is not the ignore index.</summary>
    internal static int CheckCrossEntropy(string op, Tensor logits, ReadOnlySpan<int> targets, Tensor lse, int ignoreIndex, bool host = true)
    {
        var acc = OpsCheck.First(op, logits, "logits", host);
        OpsCheck.On(op, acc, lse, "lse");
        if (logits.Rank < 2 || logits.Dim(-1) == 0)
            throw new ArgumentException($"{op}: logits has shape {logits.ShapeString}, expected [T, V] with V > 0", nameof(logits));
        int vocab = logits.Dim(-1), rows = logits.Length / vocab;
        if (targets.Length != rows)
            throw new ArgumentException($"{op}: targets has {targets.Length} entries but logits {logits.ShapeString} has {rows} rows", nameof(targets));
        Guard.Length(op, lse, "lse", rows);
        int valid = 0;
        for (int t = 0; t < rows; t++)
        {
            int target = targets[t];
            if (target == ignoreIndex) continue;
            if ((uint)target >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(targets), target,
                    $"{op}: targets[{t}] = {target} is outside [0, {vocab}) and is not the ignore index {ignoreIndex}");
            valid++;
        }
        return valid;
    }

    private double CrossEntropyParallel(float* x, int* t, float* l, int rows, int vocab, int ignoreIndex) =>
        SumOverRowParts(rows, (r0, n) => CrossEntropyRows(x, t, l, r0, n, vocab, ignoreIndex));

    /// <summary>sum of part(r0, n) over about equal row ranges, one per thread, added in part order (independent of scheduling).</summary>
    private double SumOverRowParts(int rows, Func<int, int, double> part)
    {
        int parts = Math.Min(Threads, rows);
        var partial = new double[parts];
        ParallelFor(parts, k =>
        {
            int r0 = (int)((long)rows * k / parts), r1 = (int)((long)rows * (k + 1) / parts);
            partial[k] = part(r0, r1 - r0);
        });
        double total = 0;
        foreach (double p in partial) total += p;
        return total;
    }

    private void CrossEntropyBackwardParallel(float* x, int* t, float* l, float* dx, int rows, int vocab, int ignoreIndex, float scale) =>
        OpsParallel.Ranges(Threads, rows, (r0, n) => CrossEntropyBackwardRows(x, t, l, dx, r0, n, vocab, ignoreIndex, scale));

    /// <summary>Writes lse for rows [row0, row0+count) and returns their summed loss lse - x[target] (valid rows only).</summary>
    private static double CrossEntropyRows(float* x, int* targets, float* lse, int row0, int count, int vocab, int ignoreIndex)
    {
        double total = 0;
        for (int row = row0; row < row0 + count; row++)
        {
            int target = targets[row];
            if (target == ignoreIndex)
            {
                lse[row] = 0f; // never read: the backward skips ignored rows
                continue;
            }
            float* xr = x + (long)row * vocab;
            double rowLse = VectorMath.Width switch
            {
                512 => LogSumExp<Lanes512, Vector512<float>>(xr, vocab),
                256 => LogSumExp<Lanes256, Vector256<float>>(xr, vocab),
                _ => LogSumExp<Lanes128, Vector128<float>>(xr, vocab),
            };
            lse[row] = (float)rowLse;
            total += rowLse - xr[target];
        }
        return total;
    }

    /// <summary>The largest of x[0 .. n) (-inf for an empty row).</summary>
    private static float RowMax<S, TV>(float* x, int n) where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, i = 0;
        float max = float.NegativeInfinity;
        if (n >= w)
        {
            var vmax = S.Load(x);
            for (i = w; i <= n - w; i += w) vmax = S.Max(vmax, S.Load(x + i));
            max = S.MaxAcross(vmax);
        }
        for (; i < n; i++) max = MathF.Max(max, x[i]);
        return max;
    }

    /// <summary>log(sum(exp(x))) = max + log(sum(exp(x - max))): two vectorised passes over the row.</summary>
    private static double LogSumExp<S, TV>(float* x, int n) where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, i;
        float max = RowMax<S, TV>(x, n);
        var vm = S.Splat(max);
        TV sum0 = S.Splat(0f), sum1 = S.Splat(0f);
        for (i = 0; i <= n - 2 * w; i += 2 * w)
        {
            sum0 = S.Add(sum0, VectorMath.Exp<S, TV>(S.Sub(S.Load(x + i), vm)));
            sum1 = S.Add(sum1, VectorMath.Exp<S, TV>(S.Sub(S.Load(x + i + w), vm)));
        }
        for (; i <= n - w; i += w) sum0 = S.Add(sum0, VectorMath.Exp<S, TV>(S.Sub(S.Load(x + i), vm)));
        double sum = S.SumAcross(S.Add(sum0, sum1));
        for (; i < n; i++) sum += Math.Exp(x[i] - max);
        return max + Math.Log(sum);
    }

    private static void CrossEntropyBackwardRows(float* x, int* targets, float* lse, float* dx, int row0, int count, int vocab, int ignoreIndex, float scale)
    {
        switch (VectorMath.Width)
        {
            case 512: CrossEntropyBackwardLoop<Lanes512, Vector512<float>>(x, targets, lse, dx, row0, count, vocab, ignoreIndex, scale); break;
            case 256: CrossEntropyBackwardLoop<Lanes256, Vector256<float>>(x, targets, lse, dx, row0, count, vocab, ignoreIndex, scale); break;
            default: CrossEntropyBackwardLoop<Lanes128, Vector128<float>>(x, targets, lse, dx, row0, count, vocab, ignoreIndex, scale); break;
        }
    }

    /// <summary>dx += scale * (exp(x - lse) - onehot(target)) on every valid row.</summary>
    private static void CrossEntropyBackwardLoop<S, TV>(float* x, int* targets, float* lse, float* dx, int row0, int count, int vocab, int ignoreIndex, float scale)
        where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count;
        var vs = S.Splat(scale);
        for (int row = row0; row < row0 + count; row++)
        {
            int target = targets[row];
            if (target == ignoreIndex) continue;
            float* xr = x + (long)row * vocab, dr = dx + (long)row * vocab;
            float l = lse[row];
            var vl = S.Splat(l);
            int i = 0;
            for (; i <= vocab - w; i += w)
            {
                var p = VectorMath.Exp<S, TV>(S.Sub(S.Load(xr + i), vl));
                S.Store(S.MulAdd(vs, p, S.Load(dr + i)), dr + i);
            }
            for (; i < vocab; i++) dr[i] += scale * MathF.Exp(xr[i] - l);
            dr[target] -= scale;
        }
    }
}
