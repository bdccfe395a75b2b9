using UioLlm.Kernels.Cpu;

namespace UioLlm.Kernels.Cuda;

public sealed unsafe partial class CudaKernels
{
    // ------------------------------------------------------------------------------------------ attention

    /// <summary>Head dimensions of the attention instantiations; D is served by the smallest that holds it.</summary>
    public static IReadOnlyList<int> AttentionHeadDims { get; } = [64, 128, 256];

    /// <summary>The instantiation (padded head dimension) that serves head dimension <paramref name="d"/>, or 0 when none does.</summary>
    public static int AttentionVariant(int d) => AttentionHeadDims.FirstOrDefault(v => d <= v);

    /// <summary>Keys per tile of an instantiation (64 for D &lt;= 64, else 32), as the .cu file fixes them.</summary>
    public static int AttentionKeyTile(int dmax) => dmax <= 64 ? 64 : 32;

    /// <summary>Dynamic shared memory of the forward kernel: Q [64][D+1], K and V [BK][D+1], P [64][BK+1].</summary>
    public static int AttentionForwardShared(int dmax)
    {
        int bk = AttentionKeyTile(dmax);
        return 4 * ((64 + 2 * bk) * (dmax + 1) + 64 * (bk + 1));
    }

    /// <summary>Dynamic shared memory of the backward kernel: K, V [BK][D+1], Q, dO [32][D+1], P^T and dS^T [BK][33].</summary>
    public static int AttentionBackwardShared(int dmax)
    {
        int bk = AttentionKeyTile(dmax);
        return 4 * ((2 * bk + 64) * (dmax + 1) + 2 * bk * 33);
    }

    private static KernelArg[] MaskArgs(AttentionMask m) =>
    [
        m.PrefixLength, m.Causal ? 1 : 0, m.Window, m.Sinks, m.MemoryCount, m.StepStride, m.GroupSize, m.ShiftUpperHalfHeads ? 1 : 0,
    ];

    private static int CheckHeadDim(string op, int d)
    {
        int dmax = AttentionVariant(d);
        if (dmax == 0)
            throw new ArgumentException($"{op}: head dimension {d} is larger than the CUDA attention kernels support ({AttentionHeadDims[^1]})", "q");
        return dmax;
    }

    public void Attention(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionMask mask, float? scale = null)
    {
        const string op = "Attention";
        if (q is not null) Device(op, q, "q");
        var shape = AttentionShape.Check(op, q!, k, v, lse, mask, scale, host: false);
        ArgumentNullException.ThrowIfNull(o);
        Guard.SameShape(op, q!, "q", o, "o");
        Guard.On(op, acc, o, "o");
        int dmax = CheckHeadDim(op, shape.D);
        if (shape.Batch * shape.Tq * shape.Hq == 0) return;
        if (shape.Tk == 0)
        {
            // No key at all: every query sees nothing.
            Fill(o, 0f);
            Fill(lse, float.NegativeInfinity);
            return;
        }
        var grid = LaunchShape.Grid(LaunchMath.CeilDiv(shape.Tq, 64), shape.Hq, shape.Batch, 256, AttentionForwardShared(dmax));
        var m = MaskArgs(mask);
        Launch(AttentionSource, $"attn_fwd_d{dmax}", grid,
            q!, k, v, o, lse, shape.Tq, shape.Tk, shape.Hq, shape.Hkv, shape.D, (float)(shape.Scale * 1.4426950408889634),
            m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]);
    }

    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, AttentionMask mask,
        Tensor? dq, Tensor? dk, Tensor? dv, float? scale = null)
    {
        const string op = "AttentionBackward";
        if (q is not null) Device(op, q, "q");
        var shape = AttentionShape.Check(op, q!, k, v, lse, mask, scale, host: false);
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(dO);
        Guard.SameShape(op, q!, "q", o, "o");
        Guard.SameShape(op, q!, "q", dO, "dO");
        Guard.On(op, acc, o, "o");
        Guard.On(op, acc, dO, "dO");
        var inputs = new[] { (q!, "q"), (k, "k"), (v, "v"), (o, "o"), (dO, "dO"), (lse, "lse") };
        var grads = new List<(Tensor, string)>(3);
        if (dq is not null) { Guard.SameShape(op, q!, "q", dq, "dq"); grads.Add((dq, "dq")); }
        if (dk is not null) { Guard.SameShape(op, k, "k", dk, "dk"); grads.Add((dk, "dk")); }
        if (dv is not null) { Guard.SameShape(op, v, "v", dv, "dv"); grads.Add((dv, "dv")); }
        for (int a = 0; a < grads.Count; a++)
        {
            var (grad, name) = grads[a];
            Guard.On(op, acc, grad, name);
            foreach (var (input, inputName) in inputs) CpuKernels.ThrowIfOverlapping(op, grad, name, input, inputName);
            for (int b = 0; b < a; b++) CpuKernels.ThrowIfOverlapping(op, grad, name, grads[b].Item1, grads[b].Item2);
        }
        int dmax = CheckHeadDim(op, shape.D);
        if (grads.Count == 0 || shape.Batch * shape.Tq * shape.Hq == 0 || shape.Tk == 0) return;

        using var delta = acc.Scratch.Rent(shape.Batch * shape.Hq * shape.Tq);
        long rows = (long)shape.Batch * shape.Tq * shape.Hq;
        Launch(AttentionSource, "attn_bwd_delta", LaunchShape.Linear(rows * 32, 256, maxBlocks: LaunchShape.MaxGridX),
            o, dO, delta, shape.Batch, shape.Tq, shape.Hq, shape.D);
        int bk = AttentionKeyTile(dmax);
        var grid = LaunchShape.Grid(LaunchMath.CeilDiv(shape.Tk, bk), shape.Hkv, shape.Batch, 256, AttentionBackwardShared(dmax));
        var m = MaskArgs(mask);
        Launch(AttentionSource, $"attn_bwd_d{dmax}", grid,
            q!, k, v, dO, lse, delta, dq, dk, dv, shape.Tq, shape.Tk, shape.Hq, shape.Hkv, shape.D, shape.Scale,
            m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]);
    }

    // ------------------------------------------------------------------------------------------ RmsNorm, SwiGLU

    /// <summary>Blocks for a one-block-per-row kernel (rows beyond the grid are strided over).</summary>
    private static LaunchShape Rows(int rows) => LaunchShape.Grid(Math.Min(rows, 65535 * 4), 1, 1, 256);

    public void RmsNorm(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps)
    {
        const string op = "RmsNorm";
        if (x is not null) Device(op, x, "x");
        int rows = CpuKernels.CheckRmsNorm(op, x!, weight, rstd, eps, host: false);
        OpsCheck.On(op, acc, y, "y");
        Guard.SameShape(op, x!, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x!, "x", y, "y");
        OpsCheck.Disjoint(op, x!, "x", rstd, "rstd");
        OpsCheck.Disjoint(op, y, "y", rstd, "rstd");
        if (rows == 0) return;
        Launch(NormSource, "rmsnorm_fwd", Rows(rows), x!, weight, y, rstd, rows, weight.Length, eps);
    }

    public void RmsNormBackward(Tensor x, Tensor weight, Tensor rstd, Tensor dy, Tensor? dx, Tensor? dWeight)
    {
        const string op = "RmsNormBackward";
        if (x is not null) Device(op, x, "x");
        int rows = CpuKernels.CheckRmsNorm(op, x!, weight, rstd, eps: 0f, host: false);
        OpsCheck.On(op, acc, dy, "dy");
        Guard.SameShape(op, x!, "x", dy, "dy");
        if (dx is not null)
        {
            OpsCheck.On(op, acc, dx, "dx");
            Guard.SameShape(op, x!, "x", dx, "dx");
            OpsCheck.Disjoint(op, x!, "x", dx, "dx");
            OpsCheck.Disjoint(op, dy, "dy", dx, "dx");
        }
        if (dWeight is not null)
        {
            OpsCheck.On(op, acc, dWeight, "dWeight");
            Guard.SameShape(op, weight, "weight", dWeight, "dWeight");
            OpsCheck.Disjoint(op, weight, "weight", dWeight, "dWeight");
        }
        if ((dx is null && dWeight is null) || rows == 0) return;
        int d = weight.Length;
        if (dx is not null) Launch(NormSource, "rmsnorm_bwd_dx", Rows(rows), x!, weight, rstd, dy, dx, rows, d);
        if (dWeight is not null)
        {
            var (shape, rowsPerBlock) = RmsNormWeightGrid(rows, d);
            Launch(NormSource, "rmsnorm_bwd_dw", shape, x!, rstd, dy, dWeight, rows, d, rowsPerBlock);
        }
    }

    /// <summary>dWeight grid: 32 columns x 8 row lanes per block, rows split into at most 1024 chunks of at least 64.</summary>
    public static (LaunchShape Shape, int RowsPerBlock) RmsNormWeightGrid(int rows, int d)
    {
        int chunks = (int)Math.Clamp(LaunchMath.CeilDiv((long)rows, 64), 1, 1024);
        int perBlock = LaunchMath.CeilDiv(rows, chunks);
        chunks = LaunchMath.CeilDiv(rows, perBlock);
        return (new LaunchShape((uint)LaunchMath.CeilDiv(d, 32), (uint)chunks, 1, 32, 8, 1, 0), perBlock);
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        const string op = "SwiGlu";
        Device(op, gate, "gate");
        OpsCheck.SwiGluOperands(op, acc, gate, up, h);
        Launch(NormSource, "swiglu_fwd", LaunchShape.Linear(h.Length), gate, up, h, KernelArg.Long(h.Length));
    }

    public void SwiGluBackward(Tensor gate, Tensor up, Tensor dh, Tensor? dGate, Tensor? dUp)
    {
        const string op = "SwiGluBackward";
        Device(op, gate, "gate");
        OpsCheck.SwiGluBackwardOperands(op, acc, gate, up, dh, dGate, dUp);
        if (dGate is null && dUp is null) return;
        Launch(NormSource, "swiglu_bwd", LaunchShape.Linear(gate.Length), gate, up, dh, dGate, dUp, KernelArg.Long(gate.Length));
    }

    // ------------------------------------------------------------------------------------------ embedding, loss

    public void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output)
    {
        const string op = "Embedding";
        if (table is not null) Device(op, table, "table");
        int d = CpuKernels.CheckEmbedding(op, table!, "table", ids, output, "output", host: false);
        OpsCheck.Disjoint(op, table!, "table", output, "output");
        if (ids.Length == 0 || d == 0) return;
        lock (stagingLock)
        {
            ulong pid = Stage(ids);
            Launch(LossSource, "embedding_fwd", LaunchShape.Linear((long)ids.Length * d), table!, KernelArg.Pointer(pid), output, ids.Length, d);
        }
    }

    public void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dOutput, Tensor dTable)
    {
        const string op = "EmbeddingBackward";
        if (dTable is not null) Device(op, dTable, "dTable");
        int d = CpuKernels.CheckEmbedding(op, dTable!, "dTable", ids, dOutput, "dOutput", host: false);
        OpsCheck.Disjoint(op, dOutput, "dOutput", dTable!, "dTable");
        if (ids.Length == 0 || d == 0) return;
        lock (stagingLock)
        {
            ulong pid = Stage(ids);
            Launch(LossSource, "embedding_bwd", LaunchShape.Linear((long)ids.Length * d), KernelArg.Pointer(pid), dOutput, dTable!, ids.Length, d);
        }
    }

    public float CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, int ignoreIndex = -100)
    {
        const string op = "CrossEntropy";
        if (logits is not null) Device(op, logits, "logits");
        int valid = CpuKernels.CheckCrossEntropy(op, logits!, targets, lse, ignoreIndex, host: false);
        OpsCheck.Disjoint(op, logits!, "logits", lse, "lse");
        int rows = targets.Length, vocab = logits!.Dim(-1);
        if (rows == 0) return 0f;
        using var loss = acc.Scratch.Rent(rows);
        lock (stagingLock)
        {
            ulong pt = Stage(targets);
            Launch(LossSource, "cross_entropy_fwd", Rows(rows), logits, KernelArg.Pointer(pt), lse, loss, rows, vocab, ignoreIndex);
        }
        if (valid == 0) return 0f;
        var perRow = loss.ToArray();
        double total = 0;
        for (int t = 0; t < rows; t++) total += perRow[t];
        return (float)(total / valid);
    }

    public void CrossEntropyBackward(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float dLoss = 1f, int ignoreIndex = -100)
    {
        const string op = "CrossEntropyBackward";
        if (logits is not null) Device(op, logits, "logits");
        int valid = CpuKernels.CheckCrossEntropy(op, logits!, targets, lse, ignoreIndex, host: false);
        OpsCheck.On(op, acc, dLogits, "dLogits");
        Guard.SameShape(op, logits!, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, logits!, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, lse, "lse", dLogits, "dLogits");
        Guard.Finite(op, dLoss, nameof(dLoss));
        if (valid == 0) return;
        int rows = targets.Length, vocab = logits!.Dim(-1);
        lock (stagingLock)
        {
            ulong pt = Stage(targets);
            Launch(LossSource, "cross_entropy_bwd", LaunchShape.Linear((long)rows * vocab), logits, KernelArg.Pointer(pt), lse, dLogits,
                rows, vocab, ignoreIndex, dLoss / valid);
        }
    }

    public float CrossEntropyWithGradient(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float scale = 1f, int ignoreIndex = -100)
    {
        const string op = "CrossEntropyWithGradient";
        if (logits is not null) Device(op, logits, "logits");
        int valid = CpuKernels.CheckCrossEntropy(op, logits!, targets, lse, ignoreIndex, host: false);
        OpsCheck.On(op, acc, dLogits, "dLogits");
        Guard.SameShape(op, logits!, "logits", dLogits, "dLogits");
        Guard.Writable(op, dLogits, "dLogits");
        OpsCheck.SameOrDisjoint(op, logits!, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, logits!, "logits", lse, "lse");
        OpsCheck.Disjoint(op, dLogits, "dLogits", lse, "lse");
        Guard.Finite(op, scale, nameof(scale));
        int rows = targets.Length, vocab = logits!.Dim(-1);
        if (rows == 0) return 0f;
        using var loss = acc.Scratch.Rent(rows);
        lock (stagingLock)
        {
            ulong pt = Stage(targets);
            Launch(LossSource, "cross_entropy_fused", Rows(rows), logits, KernelArg.Pointer(pt), lse, loss, dLogits, rows, vocab, ignoreIndex,
                valid == 0 ? 0f : scale / valid);
        }
        if (valid == 0) return 0f;
        var perRow = loss.ToArray();
        double total = 0;
        for (int t = 0; t < rows; t++) total += perRow[t];
        return (float)(total / valid);
    }

    // ------------------------------------------------------------------------------------------ optimizer

    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step)
    {
        const string op = "AdamW";
        Device(op, param, "param");
        OpsCheck.AdamWOperands(op, acc, param, grad, m, v);
        CpuKernels.CheckAdamWStep(step);
        if (param.Length == 0) return;
        float c1 = (float)(1.0 / (1.0 - Math.Pow(step.Beta1, step.Step)));
        float c2 = (float)(1.0 / (1.0 - Math.Pow(step.Beta2, step.Step)));
        Launch(OptimizerSource, "adamw", LaunchShape.Linear(param.Length), param, grad, m, v, KernelArg.Long(param.Length),
            step.Beta1, step.Beta2, 1f - step.Beta1, 1f - step.Beta2, c1, c2, step.LearningRate, step.Epsilon,
            1f - step.LearningRate * step.WeightDecay, step.GradScale);
    }

    /// <summary>Blocks of the sum-of-squares pass for <paramref name="n"/> elements (about 1024 elements a block, at most 1024 blocks).</summary>
    public static int SumSquaresBlocks(long n) => (int)Math.Clamp(LaunchMath.CeilDiv(n, 1024), 1, 1024);

    public float GlobalNorm(IReadOnlyList<Tensor> tensors)
    {
        const string op = "GlobalNorm";
        ArgumentNullException.ThrowIfNull(tensors);
        for (int i = 0; i < tensors.Count; i++)
        {
            string name = $"tensors[{i}]";
            if (i == 0) Device(op, tensors[i], name);
            else OpsCheck.On(op, acc, tensors[i], name);
        }
        int total = 0;
        var offsets = new int[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            offsets[i] = total;
            if (tensors[i].Length > 0) total += SumSquaresBlocks(tensors[i].Length);
        }
        if (total == 0) return 0f;
        var partials = new double[total];
        lock (stagingLock)
        {
            EnsureStaging(8L * total);
            for (int i = 0; i < tensors.Count; i++)
            {
                var t = tensors[i];
                if (t.Length == 0) continue;
                int blocks = SumSquaresBlocks(t.Length);
                Launch(OptimizerSource, "sum_squares", LaunchShape.Grid(blocks, 1, 1, 256), t, KernelArg.Long(t.Length),
                    KernelArg.Pointer(staging + 8UL * (ulong)offsets[i]));
            }
            fixed (double* p = partials) acc.CopyToHost(p, staging, 8L * total);
        }
        double sum = 0;
        foreach (double s in partials) sum += s;
        return (float)Math.Sqrt(sum);
    }

    // ------------------------------------------------------------------------------------------ elementwise

    private void CheckBinary(string op, Tensor a, Tensor b, Tensor y)
    {
        Device(op, a, "a");
        OpsCheck.On(op, acc, b, "b");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, a, "a", b, "b");
        Guard.SameShape(op, a, "a", y, "y");
        OpsCheck.SameOrDisjoint(op, a, "a", y, "y");
        OpsCheck.SameOrDisjoint(op, b, "b", y, "y");
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        CheckBinary("Add", a, b, y);
        Launch(ElementwiseSource, "ew_add", LaunchShape.Linear(y.Length), a, b, y, KernelArg.Long(y.Length));
    }

    public void Multiply(Tensor a, Tensor b, Tensor y)
    {
        CheckBinary("Multiply", a, b, y);
        Launch(ElementwiseSource, "ew_mul", LaunchShape.Linear(y.Length), a, b, y, KernelArg.Long(y.Length));
    }

    public void Scale(Tensor x, float s, Tensor y)
    {
        const string op = "Scale";
        Device(op, x, "x");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        Launch(ElementwiseSource, "ew_scale", LaunchShape.Linear(y.Length), x, s, y, KernelArg.Long(y.Length));
    }

    public void Axpy(float alpha, Tensor x, Tensor y)
    {
        const string op = "Axpy";
        Device(op, x, "x");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        Launch(ElementwiseSource, "ew_axpy", LaunchShape.Linear(y.Length), alpha, x, y, KernelArg.Long(y.Length));
    }

    public void Copy(Tensor src, Tensor dst)
    {
        const string op = "Copy";
        Device(op, src, "src");
        OpsCheck.On(op, acc, dst, "dst");
        Guard.Writable(op, dst, "dst");
        Guard.Length(op, dst, "dst", src.Length);
        long bytes = 4L * src.Length;
        if (bytes == 0 || src.Address == dst.Address) return;
        bool overlap = ReferenceEquals(src.Memory, dst.Memory) && src.Offset < dst.Offset + dst.Length && dst.Offset < src.Offset + src.Length;
        if (!overlap)
        {
            acc.CopyDevice((ulong)dst.Address, (ulong)src.Address, bytes);
            return;
        }
        // memmove semantics for overlapping views: go through scratch.
        using var tmp = acc.Scratch.Rent(src.Length);
        acc.CopyDevice((ulong)tmp.Address, (ulong)src.Address, bytes);
        acc.CopyDevice((ulong)dst.Address, (ulong)tmp.Address, bytes);
    }

    public void Fill(Tensor t, float value)
    {
        Device("Fill", t, "t");
        Guard.Writable("Fill", t, "t");
        acc.Fill32((ulong)t.Address, BitConverter.SingleToUInt32Bits(value), t.Length);
    }
}
