namespace UioLlm.Kernels.Cpu;

/// <summary>Argument checks the CPU ops share on top of <see cref="Guard"/>: nulls, device and aliasing.</summary>
internal static class OpsCheck
{
    /// <summary>The first tensor of an op: not null, on a CPU accelerator, not disposed. Returns its accelerator.</summary>
    public static Accelerator Host(string op, Tensor? t, string name)
    {
        if (t is null) throw new ArgumentNullException(name, $"{op}: {name} is null");
        if (t.Accelerator is not CpuAccelerator)
            throw new ArgumentException($"{op}: {name} {t.ShapeString} lives on {t.Accelerator.Description}, not on the CPU", name);
        t.Memory.ThrowIfDisposed();
        return t.Accelerator;
    }

    /// <summary>
    /// The first tensor of an op on any backend (not null, not disposed); with <paramref name="host"/> it must be on the CPU.
    /// Lets another backend reuse the CPU ops' shape checks.
    /// </summary>
    public static Accelerator First(string op, Tensor? t, string name, bool host)
    {
        if (host) return Host(op, t, name);
        if (t is null) throw new ArgumentNullException(name, $"{op}: {name} is null");
        t.Memory.ThrowIfDisposed();
        return t.Accelerator;
    }

    /// <summary>Every other tensor of the op: not null and on the same accelerator as the first.</summary>
    public static void On(string op, Accelerator acc, Tensor? t, string name)
    {
        if (t is null) throw new ArgumentNullException(name, $"{op}: {name} is null");
        Guard.On(op, acc, t, name);
    }

    /// <summary>Two tensors either are the very same elements (allowed in-place use) or do not overlap at all.</summary>
    public static void SameOrDisjoint(string op, Tensor a, string nameA, Tensor b, string nameB)
    {
        if (Overlap(a, b) && !(a.Offset == b.Offset && a.Length == b.Length))
            throw new ArgumentException($"{op}: {nameB} {b.ShapeString} partially overlaps {nameA} {a.ShapeString}; they must be the same tensor or disjoint", nameB);
    }

    /// <summary>A gradient output must not share storage with an input of the same call.</summary>
    public static void Disjoint(string op, Tensor a, string nameA, Tensor b, string nameB)
    {
        if (Overlap(a, b))
            throw new ArgumentException($"{op}: {nameB} {b.ShapeString} overlaps {nameA} {a.ShapeString}; it must not alias it", nameB);
    }

    /// <summary>AdamW's operands after its first (param) was checked by the backend: one device, one shape, no aliasing.</summary>
    public static void AdamWOperands(string op, Accelerator acc, Tensor param, Tensor grad, Tensor m, Tensor v)
    {
        On(op, acc, grad, "grad");
        Guard.Writable(op, param, "param");
        On(op, acc, m, "m");
        On(op, acc, v, "v");
        Guard.SameShape(op, param, "param", grad, "grad");
        Guard.SameShape(op, param, "param", m, "m");
        Guard.SameShape(op, param, "param", v, "v");
        Disjoint(op, param, "param", grad, "grad");
        Disjoint(op, param, "param", m, "m");
        Disjoint(op, param, "param", v, "v");
        Disjoint(op, m, "m", v, "v");
    }

    /// <summary>SwiGlu's operands after the first (gate): h may be gate or up themselves, or disjoint from them.</summary>
    public static void SwiGluOperands(string op, Accelerator acc, Tensor gate, Tensor up, Tensor h)
    {
        On(op, acc, up, "up");
        On(op, acc, h, "h");
        Guard.SameShape(op, gate, "gate", up, "up");
        Guard.SameShape(op, gate, "gate", h, "h");
        SameOrDisjoint(op, gate, "gate", h, "h");
        SameOrDisjoint(op, up, "up", h, "h");
    }

    /// <summary>SwiGluBackward's operands after the first (gate): the gradients match gate's shape and alias nothing.</summary>
    public static void SwiGluBackwardOperands(string op, Accelerator acc, Tensor gate, Tensor up, Tensor dh, Tensor? dGate, Tensor? dUp)
    {
        On(op, acc, up, "up");
        On(op, acc, dh, "dh");
        Guard.SameShape(op, gate, "gate", up, "up");
        Guard.SameShape(op, gate, "gate", dh, "dh");
        foreach (var (grad, name) in new[] { (dGate, "dGate"), (dUp, "dUp") })
        {
            if (grad is null) continue;
            On(op, acc, grad, name);
            Guard.SameShape(op, gate, "gate", grad, name);
            Disjoint(op, gate, "gate", grad, name);
            Disjoint(op, up, "up", grad, name);
            Disjoint(op, dh, "dh", grad, name);
        }
        if (dGate is not null && dUp is not null) Disjoint(op, dGate, "dGate", dUp, "dUp");
    }

    private static bool Overlap(Tensor a, Tensor b) =>
        ReferenceEquals(a.Memory, b.Memory) && a.Length > 0 && b.Length > 0
        && a.Offset < b.Offset + b.Length && b.Offset < a.Offset + a.Length;
}

/// <summary>Parallel splitting used by the ops once a call is big enough to pay for waking threads.</summary>
internal static class OpsParallel
{
    /// <summary>Elements below which an elementwise pass stays on the calling thread.</summary>
    public const int MinElements = 1 << 17;

    /// <summary>Run <paramref name="body"/>(start, count) over about equal contiguous parts of [0, total).</summary>
    public static void Ranges(int threads, int total, Action<int, int> body)
    {
        int parts = Math.Min(threads, total);
        if (parts <= 1)
        {
            body(0, total);
            return;
        }
        Gemm.WorkerPool.For(parts, parts, p =>
        {
            int start = (int)((long)total * p / parts);
            int end = (int)((long)total * (p + 1) / parts);
            body(start, end - start);
        });
    }
}
