using ILGPU;
using ILGPU.Runtime;
using UioLlm.Kernels.Cpu;

namespace UioLlm.Kernels.Gpu;

public sealed partial class IlgpuKernels
{
    // ------------------------------------------------------------------------------------------ attention

    private static AttentionArgs AttentionArguments(AttentionShape s, AttentionMask m, int block) => new()
    {
        Tq = s.Tq, Tk = s.Tk, Hq = s.Hq, Hkv = s.Hkv, D = s.D, Scale = s.Scale,
        Prefix = m.PrefixLength, Causal = m.Causal ? 1 : 0, Window = m.Window, Sinks = m.Sinks, MemoryCount = m.MemoryCount,
        StepStride = m.StepStride, GroupSize = m.GroupSize, Shift = m.ShiftUpperHalfHeads ? 1 : 0, MemoryCausal = m.MemoryCausal ? 1 : 0,
        WindowSpansPrefix = m.WindowSpansPrefix ? 1 : 0, BlockQ = block, BlockK = block,
    };

    private static int CheckHeadDim(string op, int d)
    {
        int block = AttentionBlock(d);
        if (block == 0)
            throw new ArgumentException($"{op}: head dimension {d} is larger than the ILGPU attention kernels support ({SharedFloats / 4}); " +
                "ask Supports(KernelOp.Attention, ...) first and fall back to another backend", "q");
        return block;
    }

    public void Attention(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionMask mask, float? scale = null)
    {
        const string op = "Attention";
        if (q is not null) Device(op, q, "q");
        var shape = AttentionShape.Check(op, q!, k, v, lse, mask, scale, host: false);
        ArgumentNullException.ThrowIfNull(o);
        Guard.SameShape(op, q!, "q", o, "o");
        Guard.On(op, acc, o, "o");
        Guard.Writable(op, o, "o");
        Guard.Writable(op, lse, "lse");
        int block = CheckHeadDim(op, shape.D);
        if (shape.Batch * shape.Tq * shape.Hq == 0) return;
        if (shape.Tk == 0)
        {
            Fill(o, 0f);
            Fill(lse, float.NegativeInfinity);
            return;
        }
        lock (acc.Sync)
        {
            attentionForward ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionArgs>(
                DeviceCode.AttentionForward);
            var args = AttentionArguments(shape, mask, block);
            attentionForward(Config(CeilDiv(shape.Tq, block), shape.Hq, shape.Batch, block, 1, 3 * block * shape.D),
                V(q!), V(k), V(v), V(o), V(lse), args);
        }
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
            Guard.Writable(op, grad, name);
            foreach (var (input, inputName) in inputs) CpuKernels.ThrowIfOverlapping(op, grad, name, input, inputName);
            for (int b = 0; b < a; b++) CpuKernels.ThrowIfOverlapping(op, grad, name, grads[b].Item1, grads[b].Item2);
        }
        int block = CheckHeadDim(op, shape.D);
        if (grads.Count == 0 || shape.Batch * shape.Tq * shape.Hq == 0 || shape.Tk == 0) return;

        using var delta = acc.Scratch.Rent(shape.Batch * shape.Hq * shape.Tq);
        lock (acc.Sync)
        {
            attentionDelta ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(DeviceCode.AttentionDelta);
            attentionDelta(shape.Batch * shape.Tq * shape.Hq, V(o), V(dO), V(delta), shape.Tq, shape.Hq, shape.D);
            var args = AttentionArguments(shape, mask, block);
            if (dq is not null)
            {
                attentionBackwardQuery ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                    ArrayView<float>, ArrayView<float>, AttentionArgs>(DeviceCode.AttentionBackwardQuery);
                attentionBackwardQuery(Config(CeilDiv(shape.Tq, block), shape.Hq, shape.Batch, block, 1, 3 * block * shape.D),
                    V(q!), V(k), V(v), V(dO), V(lse), V(delta), V(dq), args);
            }
            if (dk is not null || dv is not null)
            {
                attentionBackwardKeyValue ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                    ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, AttentionArgs>(DeviceCode.AttentionBackwardKeyValue);
                attentionBackwardKeyValue(Config(CeilDiv(shape.Tk, block), shape.Hkv, shape.Batch, block, 1, 4 * block * shape.D),
                    V(q!), V(k), V(v), V(dO), V(lse), V(delta), V(dk, k), V(dv, v), dk is null ? 0 : 1, dv is null ? 0 : 1, args);
            }
        }
    }

    // ------------------------------------------------------------------------------------------ RmsNorm, SwiGLU

    public void RmsNorm(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps)
    {
        const string op = "RmsNorm";
        if (x is not null) Device(op, x, "x");
        int rows = CpuKernels.CheckRmsNorm(op, x!, weight, rstd, eps, host: false);
        OpsCheck.On(op, acc, y, "y");
        Guard.SameShape(op, x!, "x", y, "y");
        Guard.Writable(op, y, "y");
        Guard.Writable(op, rstd, "rstd");
        OpsCheck.SameOrDisjoint(op, x!, "x", y, "y");
        OpsCheck.Disjoint(op, x!, "x", rstd, "rstd");
        OpsCheck.Disjoint(op, y, "y", rstd, "rstd");
        if (rows == 0) return;
        lock (acc.Sync)
        {
            rmsnorm ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float>(DeviceCode.RmsNorm);
            rmsnorm(Config(RowGroups(rows), 1, 1, DeviceCode.RowGroup), V(x!), V(weight), V(y), V(rstd), rows, weight.Length, eps);
        }
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
            Guard.Writable(op, dx, "dx");
            OpsCheck.Disjoint(op, x!, "x", dx, "dx");
            OpsCheck.Disjoint(op, dy, "dy", dx, "dx");
        }
        if (dWeight is not null)
        {
            OpsCheck.On(op, acc, dWeight, "dWeight");
            Guard.SameShape(op, weight, "weight", dWeight, "dWeight");
            Guard.Writable(op, dWeight, "dWeight");
            OpsCheck.Disjoint(op, weight, "weight", dWeight, "dWeight");
        }
        if ((dx is null && dWeight is null) || rows == 0) return;
        int d = weight.Length;
        lock (acc.Sync)
        {
            if (dx is not null)
            {
                rmsnormDx ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(
                    DeviceCode.RmsNormBackwardInput);
                rmsnormDx(Config(RowGroups(rows), 1, 1, DeviceCode.RowGroup), V(x!), V(weight), V(rstd), V(dy), V(dx), rows, d);
            }
            if (dWeight is not null && d > 0)
            {
                rmsnormDw ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(
                    DeviceCode.RmsNormBackwardWeight);
                rmsnormDw(d, V(x!), V(rstd), V(dy), V(dWeight), rows, d);
            }
        }
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        const string op = "SwiGlu";
        Device(op, gate, "gate");
        OpsCheck.SwiGluOperands(op, acc, gate, up, h);
        Guard.Writable(op, h, "h");
        if (h.Length == 0) return;
        lock (acc.Sync)
        {
            swiglu ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(DeviceCode.SwiGlu);
            swiglu(h.Length, V(gate), V(up), V(h));
        }
    }

    public void SwiGluBackward(Tensor gate, Tensor up, Tensor dh, Tensor? dGate, Tensor? dUp)
    {
        const string op = "SwiGluBackward";
        Device(op, gate, "gate");
        OpsCheck.SwiGluBackwardOperands(op, acc, gate, up, dh, dGate, dUp);
        if (dGate is not null) Guard.Writable(op, dGate, "dGate");
        if (dUp is not null) Guard.Writable(op, dUp, "dUp");
        if ((dGate is null && dUp is null) || gate.Length == 0) return;
        lock (acc.Sync)
        {
            swigluBackward ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(
                DeviceCode.SwiGluBackward);
            swigluBackward(gate.Length, V(gate), V(up), V(dh), V(dGate, dh), V(dUp, dh), dGate is null ? 0 : 1, dUp is null ? 0 : 1);
        }
    }

    // ------------------------------------------------------------------------------------------ soft-capping

    private Action<Index1D, ArrayView<float>, ArrayView<float>, float, float>? softcap;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, float>? softcapBackward;

    public void Softcap(Tensor x, float cap, Tensor y)
    {
        const string op = "Softcap";
        Device(op, x, "x");
        CpuKernels.CheckSoftcap(op, acc, x, cap, y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        if (x.Length == 0) return;
        lock (acc.Sync)
        {
            softcap ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float, float>(DeviceCode.Softcap);
            softcap(x.Length, V(x), V(y), cap, 1f / cap);
        }
    }

    public void SoftcapBackward(Tensor x, float cap, Tensor dy, Tensor dx)
    {
        const string op = "SoftcapBackward";
        Device(op, x, "x");
        CpuKernels.CheckSoftcap(op, acc, x, cap, dx, "dx");
        OpsCheck.On(op, acc, dy, "dy");
        Guard.SameShape(op, x, "x", dy, "dy");
        OpsCheck.Disjoint(op, x, "x", dx, "dx");
        OpsCheck.Disjoint(op, dy, "dy", dx, "dx");
        if (x.Length == 0) return;
        lock (acc.Sync)
        {
            softcapBackward ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, float>(DeviceCode.SoftcapBackward);
            softcapBackward(x.Length, V(x), V(dy), V(dx), 1f / cap);
        }
    }

    // ------------------------------------------------------------------------------------------ embedding, loss

    public void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output)
    {
        const string op = "Embedding";
        if (table is not null) Device(op, table, "table");
        int d = CpuKernels.CheckEmbedding(op, table!, "table", ids, output, "output", host: false);
        Guard.Writable(op, output, "output");
        OpsCheck.Disjoint(op, table!, "table", output, "output");
        if (ids.Length == 0 || d == 0) return;
        lock (acc.Sync)
        {
            embedding ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>(DeviceCode.Embedding);
            var staged = StageInts(ids);
            embedding(ids.Length * d, V(table!), staged, V(output), d);
        }
    }

    public void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dOutput, Tensor dTable)
    {
        const string op = "EmbeddingBackward";
        if (dTable is not null) Device(op, dTable, "dTable");
        int d = CpuKernels.CheckEmbedding(op, dTable!, "dTable", ids, dOutput, "dOutput", host: false);
        Guard.Writable(op, dTable!, "dTable");
        OpsCheck.Disjoint(op, dOutput, "dOutput", dTable!, "dTable");
        if (ids.Length == 0 || d == 0) return;
        lock (acc.Sync)
        {
            embeddingBackward ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int>(DeviceCode.EmbeddingBackward);
            var staged = StageInts(ids);
            embeddingBackward(ids.Length * d, staged, V(dOutput), V(dTable!), d);
        }
    }

    public float CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, int ignoreIndex = -100)
    {
        const string op = "CrossEntropy";
        if (logits is not null) Device(op, logits, "logits");
        int valid = CpuKernels.CheckCrossEntropy(op, logits!, targets, lse, ignoreIndex, host: false);
        Guard.Writable(op, lse, "lse");
        OpsCheck.Disjoint(op, logits!, "logits", lse, "lse");
        int rows = targets.Length, vocab = logits!.Dim(-1);
        if (rows == 0) return 0f;
        using var loss = acc.Scratch.Rent(rows);
        lock (acc.Sync)
        {
            crossEntropy ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(DeviceCode.CrossEntropy);
            var staged = StageInts(targets);
            crossEntropy(Config(RowGroups(rows), 1, 1, DeviceCode.RowGroup), V(logits), staged, V(lse), V(loss), rows, vocab, ignoreIndex);
        }
        return valid == 0 ? 0f : SumRows(loss, valid);
    }

    private static float SumRows(Tensor perRow, int valid)
    {
        var rows = perRow.ToArray();
        double total = 0;
        foreach (float r in rows) total += r;
        return (float)(total / valid);
    }

    public void CrossEntropyBackward(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float dLoss = 1f, int ignoreIndex = -100)
    {
        const string op = "CrossEntropyBackward";
        if (logits is not null) Device(op, logits, "logits");
        int valid = CpuKernels.CheckCrossEntropy(op, logits!, targets, lse, ignoreIndex, host: false);
        OpsCheck.On(op, acc, dLogits, "dLogits");
        Guard.SameShape(op, logits!, "logits", dLogits, "dLogits");
        Guard.Writable(op, dLogits, "dLogits");
        OpsCheck.Disjoint(op, logits!, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, lse, "lse", dLogits, "dLogits");
        Guard.Finite(op, dLoss, nameof(dLoss));
        if (valid == 0) return;
        int rows = targets.Length, vocab = logits!.Dim(-1);
        lock (acc.Sync)
        {
            crossEntropyBackward ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float>(
                DeviceCode.CrossEntropyBackward);
            var staged = StageInts(targets);
            crossEntropyBackward(rows * vocab, V(logits), staged, V(lse), V(dLogits), vocab, ignoreIndex, dLoss / valid);
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
        Guard.Writable(op, lse, "lse");
        OpsCheck.SameOrDisjoint(op, logits!, "logits", dLogits, "dLogits");
        OpsCheck.Disjoint(op, logits!, "logits", lse, "lse");
        OpsCheck.Disjoint(op, dLogits, "dLogits", lse, "lse");
        Guard.Finite(op, scale, nameof(scale));
        int rows = targets.Length, vocab = logits!.Dim(-1);
        if (rows == 0) return 0f;
        using var loss = acc.Scratch.Rent(rows);
        lock (acc.Sync)
        {
            crossEntropyFused ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, float>(
                DeviceCode.CrossEntropyFused);
            var staged = StageInts(targets);
            crossEntropyFused(Config(RowGroups(rows), 1, 1, DeviceCode.RowGroup), V(logits), staged, V(lse), V(loss), V(dLogits),
                rows, vocab, ignoreIndex, valid == 0 ? 0f : scale / valid);
        }
        return valid == 0 ? 0f : SumRows(loss, valid);
    }

    // ------------------------------------------------------------------------------------------ optimizer, reductions

    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step)
    {
        const string op = "AdamW";
        Device(op, param, "param");
        OpsCheck.AdamWOperands(op, acc, param, grad, m, v);
        Guard.Writable(op, m, "m");
        Guard.Writable(op, v, "v");
        CpuKernels.CheckAdamWStep(step);
        if (param.Length == 0) return;
        var args = new AdamWArgs
        {
            Beta1 = step.Beta1, Beta2 = step.Beta2, OneMinusBeta1 = 1f - step.Beta1, OneMinusBeta2 = 1f - step.Beta2,
            Correction1 = (float)(1.0 / (1.0 - Math.Pow(step.Beta1, step.Step))),
            Correction2 = (float)(1.0 / (1.0 - Math.Pow(step.Beta2, step.Step))),
            LearningRate = step.LearningRate, Epsilon = step.Epsilon, Decay = 1f - step.LearningRate * step.WeightDecay, GradScale = step.GradScale,
        };
        lock (acc.Sync)
        {
            adamw ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWArgs>(DeviceCode.AdamW);
            adamw(param.Length, V(param), V(grad), V(m), V(v), args);
        }
    }

    /// <summary>Groups of the sum-of-squares pass for <paramref name="n"/> elements (about 8 elements a thread, at most 1024 groups).</summary>
    public static int SumSquaresGroups(long n) => (int)Math.Clamp((n + 8L * DeviceCode.RowGroup - 1) / (8L * DeviceCode.RowGroup), 1, 1024);

    public float GlobalNorm(IReadOnlyList<Tensor> tensors)
    {
        const string op = "GlobalNorm";
        ArgumentNullException.ThrowIfNull(tensors);
        for (int i = 0; i < tensors.Count; i++)
        {
            string name = $"tensors[{i}]";
            if (tensors[i] is null) throw new ArgumentNullException(name, $"{op}: {name} is null");
            if (i == 0) Device(op, tensors[i], name);
            else OpsCheck.On(op, acc, tensors[i], name);
        }
        double sum = 0;
        lock (acc.Sync)
        {
            sumSquares ??= dev.LoadStreamKernel<ArrayView<float>, ArrayView<double>>(DeviceCode.SumSquares);
            foreach (var t in tensors)
            {
                if (t.Length == 0) continue;
                int groups = SumSquaresGroups(t.Length);
                var partial = DoubleScratch(groups);
                sumSquares(Config(groups, 1, 1, DeviceCode.RowGroup), V(t), partial);
                var host = new double[groups];
                partial.CopyToCPU(ref host[0], groups);
                foreach (double s in host) sum += s;
            }
        }
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
        if (y.Length == 0) return;
        lock (acc.Sync)
        {
            add ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(DeviceCode.Add);
            add(y.Length, V(a), V(b), V(y));
        }
    }

    public void Multiply(Tensor a, Tensor b, Tensor y)
    {
        CheckBinary("Multiply", a, b, y);
        if (y.Length == 0) return;
        lock (acc.Sync)
        {
            multiply ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(DeviceCode.Multiply);
            multiply(y.Length, V(a), V(b), V(y));
        }
    }

    public void Scale(Tensor x, float s, Tensor y)
    {
        const string op = "Scale";
        Device(op, x, "x");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        if (y.Length == 0) return;
        lock (acc.Sync)
        {
            scaleKernel ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float, ArrayView<float>>(DeviceCode.Scale);
            scaleKernel(y.Length, V(x), s, V(y));
        }
    }

    public void Axpy(float alpha, Tensor x, Tensor y)
    {
        const string op = "Axpy";
        Device(op, x, "x");
        OpsCheck.On(op, acc, y, "y");
        Guard.Writable(op, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        if (y.Length == 0) return;
        lock (acc.Sync)
        {
            axpy ??= dev.LoadAutoGroupedStreamKernel<Index1D, float, ArrayView<float>, ArrayView<float>>(DeviceCode.Axpy);
            axpy(y.Length, alpha, V(x), V(y));
        }
    }

    public void Copy(Tensor src, Tensor dst)
    {
        const string op = "Copy";
        Device(op, src, "src");
        OpsCheck.On(op, acc, dst, "dst");
        Guard.Writable(op, dst, "dst");
        Guard.Length(op, dst, "dst", src.Length);
        if (src.Length == 0 || (ReferenceEquals(src.Memory, dst.Memory) && src.Offset == dst.Offset)) return;
        bool overlap = ReferenceEquals(src.Memory, dst.Memory) && src.Offset < dst.Offset + dst.Length && dst.Offset < src.Offset + src.Length;
        lock (acc.Sync)
        {
            copy ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(DeviceCode.Copy);
            if (!overlap)
            {
                copy(src.Length, V(src), V(dst));
                return;
            }
            // memmove semantics for overlapping views: through scratch.
            using var tmp = acc.Scratch.Rent(src.Length);
            copy(src.Length, V(src), V(tmp));
            copy(src.Length, V(tmp), V(dst));
        }
    }

    public void Fill(Tensor t, float value)
    {
        Device("Fill", t, "t");
        Guard.Writable("Fill", t, "t");
        if (t.Length == 0) return;
        lock (acc.Sync)
        {
            fill ??= dev.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float>(DeviceCode.Fill);
            fill(t.Length, V(t), value);
        }
    }
}
