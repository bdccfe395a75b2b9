using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Kernels;

/// <summary>
/// The ops test classes share one xunit collection: some of them switch the kernels' vector width
/// (a process-wide setting), so they must not run alongside each other, nor alongside any other test: a
/// bit-exact test elsewhere (a resumed run, a same-seed demo, one process against MPI ranks) that ran while the
/// width was switched would compute with other vectors and differ in the last bit. The collection runs alone.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class OpsCollection
{
    public const string Name = "Ops kernels (vector width switch)";
}

/// <summary>Helpers for the ops tests.</summary>
internal static class Ops
{
    /// <summary>Vector widths every parity test runs at: 128, 256 (AVX2) and 512 (emulated without AVX-512).</summary>
    public static TheoryData<int> Widths => new() { 128, 256, 512 };

    /// <summary>Use <paramref name="bits"/>-wide vectors until disposed.</summary>
    public static IDisposable Width(int bits) => new WidthScope(bits);

    private sealed class WidthScope : IDisposable
    {
        private readonly int previous = VectorMath.Width;

        public WidthScope(int bits) => VectorMath.Width = bits;

        public void Dispose() => VectorMath.Width = previous;
    }

    public static Tensor Tensor(Accelerator acc, float[] data, string name, params int[] shape) => acc.FromArray(data, shape, name);

    public static double[] D(float[] a) => Check.ToDouble(a);

    public static float[] F(double[] a)
    {
        var f = new float[a.Length];
        for (int i = 0; i < a.Length; i++) f[i] = (float)a[i];
        return f;
    }

    public static float[] Times(float[] a, float s)
    {
        var r = new float[a.Length];
        for (int i = 0; i < a.Length; i++) r[i] = a[i] * s;
        return r;
    }
}
