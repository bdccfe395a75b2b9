using UioLlm.Kernels;

namespace UioLlm.Model.Autograd;

// The differentiable ops: each runs its forward kernel into tensors owned by the tape and, when a gradient
// is needed, records a closure that calls the matching backward kernel. Backward kernels accumulate, so a
// value used twice simply receives both contributions.
public sealed partial class Tape
{
    /// <summary>y = x W^T for x [T, in] and W [out, in].</summary>
    public Var Linear(Var x, Var weight)
    {
        BeginOp("Linear");
        int rows = x.Value.Dim(0), outFeatures = weight.Value.Dim(0);
        var y = Rent([rows, outFeatures], "linear");
        K.MatMul(x.Value, weight.Value, y, transB: true);
        bool grad = NeedsGrad(x, weight);
        var output = Output(y, grad);
        if (grad)
            Record("Linear", output, () =>
                K.MatMulBackward(x.Value, weight.Value, output.Grad!, x.GradForAccumulate(), weight.GradForAccumulate(), transB: true));
        return output;
    }

    /// <summary>y = x W^T + scale (x A^T) B^T: a frozen W [out, in] with a LoRA pair A [r, in], B [out, r].</summary>
    public Var Lora(Var x, Var weight, Var loraA, Var loraB, float scale)
    {
        BeginOp("Lora");
        int rows = x.Value.Dim(0), outFeatures = weight.Value.Dim(0), rank = loraA.Value.Dim(0);
        var y = Rent([rows, outFeatures], "lora");
        var xa = Rent([rows, rank], "lora.xa");
        K.LoraMatMul(x.Value, weight.Value, loraA.Value, loraB.Value, scale, y, xa);
        bool grad = NeedsGrad(x, loraA, loraB);
        var output = Output(y, grad);
        if (grad)
            Record("Lora", output, () =>
                K.LoraMatMulBackward(x.Value, weight.Value, loraA.Value, loraB.Value, scale, xa, output.Grad!,
                    x.GradForAccumulate(), loraA.GradForAccumulate(), loraB.GradForAccumulate()));
        return output;
    }

    /// <summary>c = op(a) op(b) for rank-2 or batched rank-3 operands.</summary>
    public Var MatMul(Var a, Var b, bool transA = false, bool transB = false)
    {
        BeginOp("MatMul");
        var av = a.Value;
        var bv = b.Value;
        int m = transA ? av.Dim(-1) : av.Dim(-2), n = transB ? bv.Dim(-2) : bv.Dim(-1);
        int[] shape = av.Rank == 3 ? [av.Dim(0), m, n] : bv.Rank == 3 ? [bv.Dim(0), m, n] : [m, n];
        var c = Rent(shape, "matmul");
        K.MatMul(av, bv, c, transA, transB);
        bool grad = NeedsGrad(a, b);
        var output = Output(c, grad);
        if (grad)
            Record("MatMul", output, () =>
                K.MatMulBackward(a.Value, b.Value, output.Grad!, a.GradForAccumulate(), b.GradForAccumulate(), transA, transB));
        return output;
    }

    /// <summary>Rows of a table: output[t] = table[ids[t]]; table [V, d].</summary>
    public Var Embedding(Var table, ReadOnlySpan<int> ids)
    {
        BeginOp("Embedding");
        var y = Rent([ids.Length, table.Value.Dim(1)], "embedding");
        K.Embedding(table.Value, ids, y);
        bool grad = NeedsGrad(table);
        var output = Output(y, grad);
        if (grad)
        {
            int[] saved = ids.ToArray();
            Record("Embedding", output, () => K.EmbeddingBackward(saved, output.Grad!, table.GradForAccumulate()!));
        }
        return output;
    }

    /// <summary>y = x / rms(x) * weight over the last axis.</summary>
    public Var RmsNorm(Var x, Var weight, float eps)
    {
        BeginOp("RmsNorm");
        var xv = x.Value;
        var y = Rent(xv.Shape, "rmsnorm");
        var rstd = Rent([xv.Length / xv.Dim(-1)], "rmsnorm.rstd");
        K.RmsNorm(xv, weight.Value, y, rstd, eps);
        bool grad = NeedsGrad(x, weight);
        var output = Output(y, grad);
        if (grad)
            Record("RmsNorm", output, () =>
                K.RmsNormBackward(x.Value, weight.Value, rstd, output.Grad!, x.GradForAccumulate(), weight.GradForAccumulate()));
        return output;
    }

    /// <summary>Rotary position embedding of x [T, H, D] at the given positions.</summary>
    public Var Rope(Var x, ReadOnlySpan<int> positions, RopeTable table)
    {
        BeginOp("Rope");
        var y = Rent(x.Value.Shape, "rope");
        K.Rope(x.Value, y, positions, table);
        bool grad = NeedsGrad(x);
        var output = Output(y, grad);
        if (grad)
        {
            int[] saved = positions.ToArray();
            Record("Rope", output, () => K.RopeBackward(output.Grad!, x.GradForAccumulate()!, saved, table));
        }
        return output;
    }

    /// <summary>Flash attention of q [Tq, Hq, D] over k, v [Tk, Hkv, D] under a mask.</summary>
    public Var Attention(Var q, Var k, Var v, AttentionMask mask, float? scale = null)
    {
        BeginOp("Attention");
        var qv = q.Value;
        var o = Rent(qv.Shape, "attention");
        int heads = qv.Dim(-2), tq = qv.Dim(-3);
        var lse = Rent(qv.Rank == 4 ? [qv.Dim(0), heads, tq] : [heads, tq], "attention.lse");
        K.Attention(qv, k.Value, v.Value, o, lse, mask, scale);
        bool grad = NeedsGrad(q, k, v);
        var output = Output(o, grad);
        if (grad)
            Record("Attention", output, () =>
                K.AttentionBackward(q.Value, k.Value, v.Value, o, output.Grad!, lse, mask,
                    q.GradForAccumulate(), k.GradForAccumulate(), v.GradForAccumulate(), scale));
        return output;
    }

    /// <summary>h = silu(gate) * up.</summary>
    public Var SwiGlu(Var gate, Var up)
    {
        BeginOp("SwiGlu");
        var h = Rent(gate.Value.Shape, "swiglu");
        K.SwiGlu(gate.Value, up.Value, h);
        bool grad = NeedsGrad(gate, up);
        var output = Output(h, grad);
        if (grad)
            Record("SwiGlu", output, () =>
                K.SwiGluBackward(gate.Value, up.Value, output.Grad!, gate.GradForAccumulate(), up.GradForAccumulate()));
        return output;
    }

    /// <summary>y = a + b (same shape).</summary>
    public Var Add(Var a, Var b)
    {
        BeginOp("Add");
        var y = Rent(a.Value.Shape, "add");
        K.Add(a.Value, b.Value, y);
        bool grad = NeedsGrad(a, b);
        var output = Output(y, grad);
        if (grad)
            Record("Add", output, () =>
            {
                var dy = output.Grad!;
                if (a.GradForAccumulate() is { } da) K.Axpy(1f, dy, da);
                if (b.GradForAccumulate() is { } db) K.Axpy(1f, dy, db);
            });
        return output;
    }

    /// <summary>y[t] = x[t] + bias for every row t of x [T, n]; bias [n].</summary>
    public Var AddBias(Var x, Var bias)
    {
        BeginOp("AddBias");
        int rows = x.Value.Dim(0), n = x.Value.Dim(1);
        if (bias.Value.Length != n)
            throw new ArgumentException($"AddBias: bias has {bias.Value.Length} values, the rows have {n}", nameof(bias));
        var y = Rent(x.Value.Shape, "add_bias");
        var b = bias.Value.View(1, n);
        for (int t = 0; t < rows; t++) K.Add(x.Value.Slice(t, 1), b, y.Slice(t, 1));
        bool grad = NeedsGrad(x, bias);
        var output = Output(y, grad);
        if (grad)
            Record("AddBias", output, () =>
            {
                var dy = output.Grad!;
                if (x.GradForAccumulate() is { } dx) K.Axpy(1f, dy, dx);
                if (bias.GradForAccumulate() is { } db)
                {
                    var row = db.View(1, n);
                    for (int t = 0; t < rows; t++) K.Axpy(1f, dy.Slice(t, 1), row);
                }
            });
        return output;
    }

    /// <summary>y = s x.</summary>
    public Var Scale(Var x, float s)
    {
        BeginOp("Scale");
        var y = Rent(x.Value.Shape, "scale");
        K.Scale(x.Value, s, y);
        bool grad = NeedsGrad(x);
        var output = Output(y, grad);
        if (grad) Record("Scale", output, () => K.Axpy(s, output.Grad!, x.GradForAccumulate()!));
        return output;
    }

    /// <summary>
    /// An op computed on the host: <paramref name="forward"/> maps the inputs' values (row-major copies) to the
    /// output's values of <paramref name="shape"/>; <paramref name="backward"/> (null: no gradient flows) maps the
    /// inputs' values and the output's gradient to each input's gradient (a null entry: none for that input).
    /// Correctness over speed: every value crosses to the host and back.
    /// </summary>
    public Var HostOp(string op, IReadOnlyList<Var> inputs, int[] shape, Func<float[][], float[]> forward,
        Func<float[][], float[], float[]?[]>? backward)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(forward);
        BeginOp(op);
        var values = inputs.Select(i => i.Value.ToArray()).ToArray();
        var result = forward(values);
        var y = Rent(shape, op);
        if (result.Length != y.Length)
            throw new ArgumentException($"{op}: the forward gave {result.Length} values for an output of {y.Length}");
        y.CopyFrom(result);
        bool grad = backward is not null && IsRecording && inputs.Any(i => i.RequiresGrad);
        var output = Output(y, grad);
        if (grad)
        {
            var saved = inputs.ToArray();
            Record(op, output, () =>
            {
                var grads = backward!(values, output.Grad!.ToArray());
                for (int i = 0; i < saved.Length; i++)
                {
                    if (grads[i] is not { } g || saved[i].GradForAccumulate() is not { } d) continue;
                    var current = d.ToArray();
                    for (int j = 0; j < current.Length; j++) current[j] += g[j];
                    d.CopyFrom(current);
                }
            });
        }
        return output;
    }

    /// <summary>The same values under another shape (a view: no copy forward).</summary>
    public Var Reshape(Var x, params int[] shape)
    {
        BeginOp("Reshape");
        var y = x.Value.View(shape);
        bool grad = NeedsGrad(x);
        var output = Output(y, grad, x.Name);
        if (grad)
            Record("Reshape", output, () =>
            {
                var dx = x.GradForAccumulate()!;
                K.Axpy(1f, output.Grad!.View(ShapeOf(dx)), dx);
            });
        return output;
    }

    /// <summary>Rows [start, start + count) along the first axis (a view: no copy forward).</summary>
    public Var SliceRows(Var x, int start, int count)
    {
        BeginOp("SliceRows");
        var y = x.Value.Slice(start, count);
        bool grad = NeedsGrad(x);
        var output = Output(y, grad, x.Name);
        if (grad)
            Record("SliceRows", output, () => K.Axpy(1f, output.Grad!, x.GradForAccumulate()!.Slice(start, count)));
        return output;
    }

    /// <summary>[a ; b] along the first axis (the other axes must match).</summary>
    public Var ConcatRows(Var a, Var b) => ConcatRows([a, b]);

    /// <summary>The parts stacked along the first axis (the other axes must match).</summary>
    public Var ConcatRows(IReadOnlyList<Var> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0) throw new ArgumentException("ConcatRows: no parts", nameof(parts));
        if (parts.Count == 1) return parts[0];
        BeginOp("ConcatRows");
        var first = parts[0].Value;
        int[] shape = first.Shape.ToArray();
        shape[0] = 0;
        bool grad = false;
        foreach (var part in parts)
        {
            var pv = part.Value;
            if (pv.Rank != first.Rank || !pv.Shape[1..].SequenceEqual(first.Shape[1..]))
                throw new ArgumentException($"ConcatRows: {part} does not match {parts[0]}: all axes but the first must match");
            shape[0] += pv.Dim(0);
            grad |= NeedsGrad(part);
        }
        var y = Rent(shape, "concat");
        int row = 0;
        foreach (var part in parts)
        {
            K.Copy(part.Value, y.Slice(row, part.Value.Dim(0)));
            row += part.Value.Dim(0);
        }
        var output = Output(y, grad);
        if (grad)
        {
            var saved = parts.ToArray();
            Record("ConcatRows", output, () =>
            {
                int at = 0;
                foreach (var part in saved)
                {
                    int rows = part.Value.Dim(0);
                    if (part.GradForAccumulate() is { } d) K.Axpy(1f, output.Grad!.Slice(at, rows), d);
                    at += rows;
                }
            });
        }
        return output;
    }

    /// <summary>
    /// Mean next-token cross-entropy of logits [T, V] against targets (ignoreIndex rows skipped), as a
    /// one-element value.
    /// </summary>
    public Var CrossEntropy(Var logits, ReadOnlySpan<int> targets, int ignoreIndex = -100)
    {
        BeginOp("CrossEntropy");
        var lv = logits.Value;
        var lse = Rent([lv.Dim(0)], "crossentropy.lse");
        float mean = K.CrossEntropy(lv, targets, lse, ignoreIndex);
        var loss = Rent([1], "loss");
        K.Fill(loss, mean);
        bool grad = NeedsGrad(logits);
        var output = Output(loss, grad, "loss");
        if (grad)
        {
            int[] saved = targets.ToArray();
            Record("CrossEntropy", output, () =>
            {
                float dLoss = output.Grad!.ToArray()[0];
                K.CrossEntropyBackward(logits.Value, saved, lse, logits.GradForAccumulate()!, dLoss, ignoreIndex);
            });
        }
        return output;
    }

    /// <summary>
    /// Mean next-token cross-entropy of the logits x W^T, fused: the logits [T, V] (the largest tensor of a
    /// language-model step) are computed, turned into their own gradient in one pass while still in cache
    /// (<see cref="IKernels.CrossEntropyWithGradient"/>), and only that one buffer is kept for the backward, which
    /// is two GEMMs scaled by the incoming dLoss. Same value and gradients as Linear followed by CrossEntropy.
    /// </summary>
    public Var LinearCrossEntropy(Var x, Var weight, ReadOnlySpan<int> targets, int ignoreIndex = -100)
    {
        BeginOp("LinearCrossEntropy");
        if (x.Value.Rank != 2)
            throw new ArgumentException($"LinearCrossEntropy on {Name}: x has shape {x.Value.ShapeString}, expected [T, in]", nameof(x));
        int rows = x.Value.Dim(0), vocab = weight.Value.Dim(0);
        var logits = Rent([rows, vocab], "logits");
        K.MatMul(x.Value, weight.Value, logits, transB: true);
        var lse = Rent([rows], "crossentropy.lse");
        bool grad = NeedsGrad(x, weight);
        // With a gradient to come, the logits buffer becomes dLoss/dlogits for dLoss = 1.
        float mean = grad
            ? K.CrossEntropyWithGradient(logits, targets, lse, logits, 1f, ignoreIndex)
            : K.CrossEntropy(logits, targets, lse, ignoreIndex);
        var loss = Rent([1], "loss");
        K.Fill(loss, mean);
        var output = Output(loss, grad, "loss");
        if (grad)
        {
            Record("LinearCrossEntropy", output, () =>
            {
                float dLoss = output.Grad!.ToArray()[0];
                if (x.GradForAccumulate() is { } dx) K.MatMul(logits, weight.Value, dx, alpha: dLoss, beta: 1f);
                if (weight.GradForAccumulate() is { } dw) K.MatMul(logits, x.Value, dw, transA: true, alpha: dLoss, beta: 1f);
            });
        }
        return output;
    }

    private static int[] ShapeOf(Tensor t) => t.Shape.ToArray();
}
