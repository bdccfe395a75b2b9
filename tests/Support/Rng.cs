using UioLlm.Kernels;

namespace UioLlm.Tests.Support;

/// <summary>Seeded test data: every test draws from its own fixed seed so failures reproduce.</summary>
public sealed class Rng(int seed)
{
    private readonly Random random = new(seed);

    public float[] Uniform(int n, float lo = -1f, float hi = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * (float)random.NextDouble();
        return a;
    }

    public float[] Normal(int n, float std = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            a[i] = std * (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return a;
    }

    public int[] Ints(int n, int lo, int hiExclusive)
    {
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = random.Next(lo, hiExclusive);
        return a;
    }

    public int Next(int lo, int hiExclusive) => random.Next(lo, hiExclusive);

    /// <summary>A tensor of uniform values on <paramref name="acc"/>.</summary>
    public Tensor Tensor(Accelerator acc, string name, params int[] shape)
    {
        int n = 1;
        foreach (int d in shape) n *= d;
        return acc.FromArray(Uniform(n), shape, name);
    }
}
