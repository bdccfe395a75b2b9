namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    /// <summary>Softcap's operands after the first (x): same shape, a positive finite cap; y is x itself or disjoint from it.</summary>
    internal static void CheckSoftcap(string op, Accelerator acc, Tensor x, float cap, Tensor y, string yName)
    {
        OpsCheck.On(op, acc, y, yName);
        Guard.SameShape(op, x, "x", y, yName);
        Guard.Writable(op, y, yName);
        if (!(cap > 0f) || !float.IsFinite(cap))
            throw new ArgumentOutOfRangeException(nameof(cap), cap, $"{op}: cap must be a positive finite number");
    }

    public void Softcap(Tensor x, float cap, Tensor y)
    {
        const string op = "Softcap";
        var acc = OpsCheck.Host(op, x, "x");
        CheckSoftcap(op, acc, x, cap, y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        float* px = x.Pointer, py = y.Pointer;
        float inv = 1f / cap;
        int n = x.Length;
        if (n < OpsParallel.MinElements) SoftcapRange(px, py, n, cap, inv);
        else OpsParallel.Ranges(Threads, n, (s, c) => SoftcapRange(px + s, py + s, c, cap, inv));
    }

    private static void SoftcapRange(float* x, float* y, int n, float cap, float inv)
    {
        for (int i = 0; i < n; i++) y[i] = cap * MathF.Tanh(x[i] * inv);
    }

    public void SoftcapBackward(Tensor x, float cap, Tensor dy, Tensor dx)
    {
        const string op = "SoftcapBackward";
        var acc = OpsCheck.Host(op, x, "x");
        CheckSoftcap(op, acc, x, cap, dx, "dx");
        OpsCheck.On(op, acc, dy, "dy");
        Guard.SameShape(op, x, "x", dy, "dy");
        OpsCheck.Disjoint(op, x, "x", dx, "dx");
        OpsCheck.Disjoint(op, dy, "dy", dx, "dx");
        float* px = x.Pointer, pd = dy.Pointer, pdx = dx.Pointer;
        float inv = 1f / cap;
        int n = x.Length;
        if (n < OpsParallel.MinElements) SoftcapBackwardRange(px, pd, pdx, n, inv);
        else OpsParallel.Ranges(Threads, n, (s, c) => SoftcapBackwardRange(px + s, pd + s, pdx + s, c, inv));
    }

    private static void SoftcapBackwardRange(float* x, float* dy, float* dx, int n, float inv)
    {
        for (int i = 0; i < n; i++)
        {
            float t = MathF.Tanh(x[i] * inv);
            dx[i] += dy[i] * (1f - t * t);
        }
    }
}
