using UioLlm.Kernels;

namespace UioLlm.Tests.Reference;

/// <summary>AdamW with decoupled weight decay, written straight from the formulas, in double.</summary>
public static class AdamWReference
{
    public static void Step(double[] p, double[] grad, double[] m, double[] v, AdamWStep s)
    {
        double b1 = s.Beta1, b2 = s.Beta2;
        for (int i = 0; i < p.Length; i++)
        {
            double g = s.GradScale * grad[i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            double mHat = m[i] / (1 - Math.Pow(b1, s.Step));
            double vHat = v[i] / (1 - Math.Pow(b2, s.Step));
            p[i] -= s.LearningRate * (mHat / (Math.Sqrt(vHat) + s.Epsilon) + s.WeightDecay * p[i]);
        }
    }
}
