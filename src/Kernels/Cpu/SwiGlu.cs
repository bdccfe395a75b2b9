using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    /// <summary>Elements below which SwiGlu runs on the calling thread (each costs an exp and a divide).</summary>
    private const int SwiGluParallelElements = 1 << 15;

    public void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        const string op = "SwiGlu";
        var acc = OpsCheck.Host(op, gate, "gate");
        OpsCheck.SwiGluOperands(op, acc, gate, up, h);

        float* g = gate.Pointer, u = up.Pointer, y = h.Pointer;
        int n = h.Length;
        if (n < SwiGluParallelElements) SwiGluRange(g, u, y, n);
        else SwiGluParallel(g, u, y, n);
    }

    // Separate so the serial path does not allocate the lambda's closure.
    private void SwiGluParallel(float* g, float* u, float* y, int n) =>
        OpsParallel.Ranges(Threads, n, (s, c) => SwiGluRange(g + s, u + s, y + s, c));

    private void SwiGluBackwardParallel(float* g, float* u, float* d, float* dg, float* du, int n) =>
        OpsParallel.Ranges(Threads, n, (s, c) =>
            SwiGluBackwardRange(g + s, u + s, d + s, dg is null ? null : dg + s, du is null ? null : du + s, c));

    public void SwiGluBackward(Tensor gate, Tensor up, Tensor dh, Tensor? dGate, Tensor? dUp)
    {
        const string op = "SwiGluBackward";
        var acc = OpsCheck.Host(op, gate, "gate");
        OpsCheck.SwiGluBackwardOperands(op, acc, gate, up, dh, dGate, dUp);
        if (dGate is null && dUp is null) return;

        float* g = gate.Pointer, u = up.Pointer, d = dh.Pointer;
        float* dg = dGate is null ? null : dGate.Pointer;
        float* du = dUp is null ? null : dUp.Pointer;
        int n = gate.Length;
        if (n < SwiGluParallelElements) SwiGluBackwardRange(g, u, d, dg, du, n);
        else SwiGluBackwardParallel(g, u, d, dg, du, n);
    }

    private static void SwiGluRange(float* g, float* u, float* h, int n)
    {
        switch (VectorMath.Width)
        {
            case 512: SwiGluLoop<Lanes512, Vector512<float>>(g, u, h, n); break;
            case 256: SwiGluLoop<Lanes256, Vector256<float>>(g, u, h, n); break;
            default: SwiGluLoop<Lanes128, Vector128<float>>(g, u, h, n); break;
        }
    }

    /// <summary>h = g sigmoid(g) u.</summary>
    private static void SwiGluLoop<S, TV>(float* g, float* u, float* h, int n) where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, i = 0;
        for (; i <= n - w; i += w)
        {
            var gi = S.Load(g + i);
            S.Store(S.Mul(S.Mul(gi, VectorMath.Sigmoid<S, TV>(gi)), S.Load(u + i)), h + i);
        }
        for (; i < n; i++) h[i] = g[i] * VectorMath.Sigmoid(g[i]) * u[i];
    }

    private static void SwiGluBackwardRange(float* g, float* u, float* dh, float* dg, float* du, int n)
    {
        switch (VectorMath.Width)
        {
            case 512: SwiGluBackwardLoop<Lanes512, Vector512<float>>(g, u, dh, dg, du, n); break;
            case 256: SwiGluBackwardLoop<Lanes256, Vector256<float>>(g, u, dh, dg, du, n); break;
            default: SwiGluBackwardLoop<Lanes128, Vector128<float>>(g, u, dh, dg, du, n); break;
        }
    }

    /// <summary>
    /// With s = sigmoid(g): dGate += dh u s (1 + g (1 - s)), dUp += dh g s. Both factors stay finite for
    /// any finite g because s saturates to exactly 0 or 1.
    /// </summary>
    private static void SwiGluBackwardLoop<S, TV>(float* g, float* u, float* dh, float* dg, float* du, int n)
        where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, i = 0;
        var one = S.Splat(1f);
        for (; i <= n - w; i += w)
        {
            TV gi = S.Load(g + i), di = S.Load(dh + i);
            TV s = VectorMath.Sigmoid<S, TV>(gi);
            if (dg is not null)
            {
                var slope = S.Mul(s, S.MulAdd(gi, S.Sub(one, s), one));
                S.Store(S.MulAdd(S.Mul(di, S.Load(u + i)), slope, S.Load(dg + i)), dg + i);
            }
            if (du is not null) S.Store(S.MulAdd(di, S.Mul(gi, s), S.Load(du + i)), du + i);
        }
        for (; i < n; i++)
        {
            float s = VectorMath.Sigmoid(g[i]);
            if (dg is not null) dg[i] += dh[i] * u[i] * s * (1f + g[i] * (1f - s));
            if (du is not null) du[i] += dh[i] * g[i] * s;
        }
    }
}
