using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step)
    {
        const string op = "AdamW";
        var acc = OpsCheck.Host(op, param, "param");
        OpsCheck.AdamWOperands(op, acc, param, grad, m, v);
        CheckAdamWStep(step);

        // Bias corrections in double (beta^t underflows gracefully), folded into per-call constants.
        var k = new AdamWConstants
        {
            Beta1 = step.Beta1,
            Beta2 = step.Beta2,
            OneMinusBeta1 = 1f - step.Beta1,
            OneMinusBeta2 = 1f - step.Beta2,
            Correction1 = (float)(1.0 / (1.0 - Math.Pow(step.Beta1, step.Step))),
            Correction2 = (float)(1.0 / (1.0 - Math.Pow(step.Beta2, step.Step))),
            LearningRate = step.LearningRate,
            Epsilon = step.Epsilon,
            Decay = 1f - step.LearningRate * step.WeightDecay,
            GradScale = step.GradScale,
        };
        float* p = param.Pointer, g = grad.Pointer, pm = m.Pointer, pv = v.Pointer;
        int n = param.Length;
        if (n < OpsParallel.MinElements) AdamWRange(p, g, pm, pv, n, k);
        else AdamWParallel(p, g, pm, pv, n, k);
    }

    // Separate so the serial path does not allocate the lambda's closure.
    private void AdamWParallel(float* p, float* g, float* m, float* v, int n, AdamWConstants k) =>
        OpsParallel.Ranges(Threads, n, (s, c) => AdamWRange(p + s, g + s, m + s, v + s, c, k));

    internal static void CheckAdamWStep(AdamWStep step)
    {
        const string op = "AdamW";
        if (step.Step < 1) throw new ArgumentOutOfRangeException(nameof(step), step.Step, $"{op}: step.Step is {step.Step}; steps count from 1");
        Guard.Finite(op, step.LearningRate, "step.LearningRate");
        Guard.Finite(op, step.WeightDecay, "step.WeightDecay");
        Guard.Finite(op, step.GradScale, "step.GradScale");
        if (!(step.Beta1 >= 0f && step.Beta1 < 1f)) throw new ArgumentOutOfRangeException(nameof(step), step.Beta1, $"{op}: step.Beta1 must lie in [0, 1)");
        if (!(step.Beta2 >= 0f && step.Beta2 < 1f)) throw new ArgumentOutOfRangeException(nameof(step), step.Beta2, $"{op}: step.Beta2 must lie in [0, 1)");
        if (!(step.Epsilon > 0f) || float.IsInfinity(step.Epsilon)) throw new ArgumentOutOfRangeException(nameof(step), step.Epsilon, $"{op}: step.Epsilon must be a positive finite number");
    }

    private struct AdamWConstants
    {
        public float Beta1, Beta2, OneMinusBeta1, OneMinusBeta2, Correction1, Correction2, LearningRate, Epsilon, Decay, GradScale;
    }

    private static void AdamWRange(float* p, float* g, float* m, float* v, int n, in AdamWConstants k)
    {
        switch (VectorMath.Width)
        {
            case 512: AdamWLoop<Lanes512, Vector512<float>>(p, g, m, v, n, k); break;
            case 256: AdamWLoop<Lanes256, Vector256<float>>(p, g, m, v, n, k); break;
            default: AdamWLoop<Lanes128, Vector128<float>>(p, g, m, v, n, k); break;
        }
    }

    /// <summary>
    /// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p = p (1 - lr wd) - lr (m c1) / (sqrt(v c2) + eps), with g = GradScale * grad.
    /// </summary>
    private static void AdamWLoop<S, TV>(float* p, float* g, float* m, float* v, int n, in AdamWConstants k)
        where S : ISimdLanes<TV> where TV : struct
    {
        TV b1 = S.Splat(k.Beta1), b2 = S.Splat(k.Beta2), c1 = S.Splat(k.OneMinusBeta1), c2 = S.Splat(k.OneMinusBeta2);
        TV bc1 = S.Splat(k.Correction1), bc2 = S.Splat(k.Correction2), lr = S.Splat(-k.LearningRate);
        TV eps = S.Splat(k.Epsilon), decay = S.Splat(k.Decay), gs = S.Splat(k.GradScale);
        int w = S.Count, i = 0;
        for (; i <= n - w; i += w)
        {
            var gi = S.Mul(S.Load(g + i), gs);
            var mi = S.MulAdd(b1, S.Load(m + i), S.Mul(c1, gi));
            var vi = S.MulAdd(b2, S.Load(v + i), S.Mul(c2, S.Mul(gi, gi)));
            S.Store(mi, m + i);
            S.Store(vi, v + i);
            var update = S.Div(S.Mul(mi, bc1), S.Add(S.Sqrt(S.Mul(vi, bc2)), eps));
            S.Store(S.MulAdd(lr, update, S.Mul(S.Load(p + i), decay)), p + i);
        }
        for (; i < n; i++)
        {
            float gi = g[i] * k.GradScale;
            float mi = k.Beta1 * m[i] + k.OneMinusBeta1 * gi;
            float vi = k.Beta2 * v[i] + k.OneMinusBeta2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            float update = mi * k.Correction1 / (MathF.Sqrt(vi * k.Correction2) + k.Epsilon);
            p[i] = p[i] * k.Decay - k.LearningRate * update;
        }
    }

    public float GlobalNorm(IReadOnlyList<Tensor> tensors)
    {
        const string op = "GlobalNorm";
        ArgumentNullException.ThrowIfNull(tensors);
        Accelerator? acc = null;
        for (int i = 0; i < tensors.Count; i++)
        {
            string name = $"tensors[{i}]";
            if (acc is null) acc = OpsCheck.Host(op, tensors[i], name);
            else OpsCheck.On(op, acc, tensors[i], name);
        }

        double sum = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            sum += t.Length < OpsParallel.MinElements ? SumSquares(t.Pointer, t.Length) : SumSquaresParallel(t.Pointer, t.Length);
        }
        return (float)Math.Sqrt(sum);
    }

    private double SumSquaresParallel(float* p, int n)
    {
        // One partial per part, added in a fixed order so the result does not depend on scheduling.
        int parts = Math.Max(1, Threads);
        var partial = new double[parts];
        ParallelFor(parts, k =>
        {
            int start = (int)((long)n * k / parts), end = (int)((long)n * (k + 1) / parts);
            partial[k] = SumSquares(p + start, end - start);
        });
        double sum = 0;
        foreach (double s in partial) sum += s;
        return sum;
    }

    private static double SumSquares(float* p, int n) => VectorMath.Width switch
    {
        512 => Lanes512.SumSquares(p, n),
        256 => Lanes256.SumSquares(p, n),
        _ => Lanes128.SumSquares(p, n),
    };
}
