using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    public void Add(Tensor a, Tensor b, Tensor y)
    {
        CheckBinary("Add", a, b, y);
        BinaryPass(ElementOp.Add, a.Pointer, b.Pointer, y.Pointer, y.Length);
    }

    public void Multiply(Tensor a, Tensor b, Tensor y)
    {
        CheckBinary("Multiply", a, b, y);
        BinaryPass(ElementOp.Multiply, a.Pointer, b.Pointer, y.Pointer, y.Length);
    }

    public void Scale(Tensor x, float s, Tensor y)
    {
        const string op = "Scale";
        var acc = OpsCheck.Host(op, x, "x");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        BinaryPass(ElementOp.Scale, x.Pointer, x.Pointer, y.Pointer, y.Length, s);
    }

    public void Axpy(float alpha, Tensor x, Tensor y)
    {
        const string op = "Axpy";
        var acc = OpsCheck.Host(op, x, "x");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        BinaryPass(ElementOp.Axpy, x.Pointer, y.Pointer, y.Pointer, y.Length, alpha);
    }

    public void Copy(Tensor src, Tensor dst)
    {
        const string op = "Copy";
        var acc = OpsCheck.Host(op, src, "src");
        OpsCheck.On(op, acc, dst, "dst");
        Guard.Writable(op, dst, "dst");
        Guard.Length(op, dst, "dst", src.Length);
        // memmove semantics: overlapping views copy correctly.
        long bytes = 4L * src.Length;
        Buffer.MemoryCopy(src.Pointer, dst.Pointer, bytes, bytes);
    }

    public void Fill(Tensor t, float value)
    {
        OpsCheck.Host("Fill", t, "t");
        Guard.Writable("Fill", t, "t");
        new Span<float>(t.Pointer, t.Length).Fill(value);
    }

    private static void CheckBinary(string op, Tensor a, Tensor b, Tensor y)
    {
        var acc = OpsCheck.Host(op, a, "a");
        OpsCheck.On(op, acc, b, "b");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, a, "a", b, "b");
        Guard.SameShape(op, a, "a", y, "y");
        OpsCheck.SameOrDisjoint(op, a, "a", y, "y");
        OpsCheck.SameOrDisjoint(op, b, "b", y, "y");
    }

    internal enum ElementOp { Add, Multiply, Scale, Axpy }

    /// <summary>y[i] = f(a[i], b[i]) over n elements, split across threads when n is large.</summary>
    private void BinaryPass(ElementOp f, float* a, float* b, float* y, int n, float s = 0f)
    {
        if (n < OpsParallel.MinElements) BinaryRange(f, a, b, y, n, s);
        else BinaryParallel(f, a, b, y, n, s);
    }

    private void BinaryParallel(ElementOp f, float* a, float* b, float* y, int n, float s) =>
        OpsParallel.Ranges(Threads, n, (start, count) => BinaryRange(f, a + start, b + start, y + start, count, s));

    private static void BinaryRange(ElementOp f, float* a, float* b, float* y, int n, float s)
    {
        switch (VectorMath.Width)
        {
            case 512: BinaryLoop<Lanes512, Vector512<float>>(f, a, b, y, n, s); break;
            case 256: BinaryLoop<Lanes256, Vector256<float>>(f, a, b, y, n, s); break;
            default: BinaryLoop<Lanes128, Vector128<float>>(f, a, b, y, n, s); break;
        }
    }

    private static void BinaryLoop<S, TV>(ElementOp f, float* a, float* b, float* y, int n, float s)
        where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, i = 0;
        var vs = S.Splat(s);
        switch (f)
        {
            case ElementOp.Add:
                for (; i <= n - w; i += w) S.Store(S.Add(S.Load(a + i), S.Load(b + i)), y + i);
                for (; i < n; i++) y[i] = a[i] + b[i];
                break;
            case ElementOp.Multiply:
                for (; i <= n - w; i += w) S.Store(S.Mul(S.Load(a + i), S.Load(b + i)), y + i);
                for (; i < n; i++) y[i] = a[i] * b[i];
                break;
            case ElementOp.Scale:
                for (; i <= n - w; i += w) S.Store(S.Mul(vs, S.Load(a + i)), y + i);
                for (; i < n; i++) y[i] = s * a[i];
                break;
            case ElementOp.Axpy: // y = s * a + b (b is y itself)
                for (; i <= n - w; i += w) S.Store(S.MulAdd(vs, S.Load(a + i), S.Load(b + i)), y + i);
                for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(s, a[i], b[i]);
                break;
        }
    }
}
