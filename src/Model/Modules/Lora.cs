using UioLlm.Kernels;
using UioLlm.Model.Autograd;

namespace UioLlm.Model.Modules;

/// <summary>
/// A low-rank adapter on a frozen projection: delta = scale (x A^T) B^T with A [r, in], B [out, r] and
/// scale = alpha / r. As in PEFT, A starts uniform in +-1/sqrt(in) (Kaiming-uniform with a = sqrt 5) and
/// B starts at zero, so a fresh adapter leaves the model unchanged.
/// </summary>
public sealed class Lora : IDisposable
{
    public Lora(Accelerator accelerator, int inFeatures, int outFeatures, int rank, float alpha, Random rng, string name = "lora")
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(rng);
        if (rank <= 0) throw new ArgumentOutOfRangeException(nameof(rank), $"LoRA rank must be positive, got {rank}");
        if (!(alpha > 0) || !float.IsFinite(alpha)) throw new ArgumentOutOfRangeException(nameof(alpha), $"LoRA alpha must be positive, got {alpha}");
        Rank = rank;
        Alpha = alpha;
        var a = new float[rank * inFeatures];
        float bound = 1f / MathF.Sqrt(inFeatures);
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * bound;
        A = Var.Leaf(accelerator.FromArray(a, [rank, inFeatures], name + ".lora_A.weight"), requiresGrad: true);
        B = Var.Leaf(accelerator.Allocate([outFeatures, rank], name + ".lora_B.weight"), requiresGrad: true);
    }

    public int Rank { get; }
    public float Alpha { get; }
    public float Scale => Alpha / Rank;
    /// <summary>[r, in], trainable.</summary>
    public Var A { get; }
    /// <summary>[out, r], trainable, zero at start.</summary>
    public Var B { get; }

    public IEnumerable<Var> Parameters()
    {
        yield return A;
        yield return B;
    }

    public void Dispose()
    {
        foreach (var p in Parameters())
        {
            p.DisposeLeaf();
            p.Value.Dispose();
        }
    }
}

/// <summary>
/// A projection y = x W^T with a weight W [out, in]: frozen (the usual case, optionally with a LoRA
/// adapter) or trainable (full-weight training, e.g. pre-training a small base; then no adapter).
/// </summary>
public sealed partial class Linear(Var weight)
{
    public Linear(Tensor weight, bool trainable = false) : this(trainable ? Var.Leaf(weight, requiresGrad: true) : Var.Constant(weight)) { }

    public Var Weight { get; } = weight;
    /// <summary>An optional bias [out] added to every output row (Qwen2's q/k/v projections); null for none.</summary>
    public Var? Bias { get; init; }
    /// <summary>
    /// The weight kept block-quantised (a GGUF loaded with keepQuantized): tape-free single-token products on the
    /// CPU use it instead of <see cref="Weight"/>; null for none.
    /// </summary>
    public UioLlm.Kernels.Quantization.QuantizedMatrix? Quantized { get; internal set; }
    public int InFeatures => Weight.Value.Dim(1);
    public int OutFeatures => Weight.Value.Dim(0);
    public Lora? Adapter { get; private set; }

    /// <summary>Attaches (or replaces) a LoRA adapter; returns it.</summary>
    public Lora AttachLora(int rank, float alpha, Random rng)
    {
        if (Weight.RequiresGrad)
            throw new InvalidOperationException($"Linear '{Weight.Name}': the weight itself is trainable; LoRA adapts frozen weights only");
        Adapter?.Dispose();
        Adapter = new Lora(Weight.Accelerator, InFeatures, OutFeatures, rank, alpha, rng, Weight.Name ?? "linear");
        return Adapter;
    }

    public void DetachLora()
    {
        Adapter?.Dispose();
        Adapter = null;
    }

    /// <summary>x [T, in] -> [T, out].</summary>
    public Var Forward(Tape tape, Var x)
    {
        var y = Adapter is null ? tape.Linear(x, Weight) : tape.Lora(x, Weight, Adapter.A, Adapter.B, Adapter.Scale);
        return Bias is null ? y : tape.AddBias(y, Bias);
    }

    /// <summary>
    /// x [T, in] -> [T, out] through this frozen weight plus a LoRA adapter the caller keeps apart from it (not
    /// attached, so one base serves several adapted roles): x W^T + scale (x A^T) B^T, plus the bias. An attached
    /// <see cref="Adapter"/> is not used.
    /// </summary>
    /// <exception cref="ArgumentException">The adapter's A or B does not fit this projection's [out, in].</exception>
    /// <exception cref="InvalidOperationException">The weight itself is trainable (its gradient would be dropped).</exception>
    public Var Forward(Tape tape, Var x, Lora adapter)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(adapter);
        if (Weight.RequiresGrad)
            throw new InvalidOperationException($"Linear '{Weight.Name}': the weight itself is trainable; LoRA adapts frozen weights only");
        if (adapter.A.Value.Dim(1) != InFeatures || adapter.B.Value.Dim(0) != OutFeatures)
            throw new ArgumentException(
                $"Linear '{Weight.Name}': adapter A {adapter.A.Value.ShapeString}, B {adapter.B.Value.ShapeString} do not fit a [{OutFeatures}, {InFeatures}] weight",
                nameof(adapter));
        var y = tape.Lora(x, Weight, adapter.A, adapter.B, adapter.Scale);
        return Bias is null ? y : tape.AddBias(y, Bias);
    }

    /// <summary>Mean cross-entropy of the projection's output (the LM head's logits) against targets: fused when no adapter is attached.</summary>
    public Var CrossEntropy(Tape tape, Var x, ReadOnlySpan<int> targets) =>
        Adapter is null && Bias is null ? tape.LinearCrossEntropy(x, Weight, targets) : tape.CrossEntropy(Forward(tape, x), targets);
}

/// <summary>Root-mean-square normalisation with a gain (frozen unless <paramref name="trainable"/>).</summary>
public sealed class RmsNorm(Tensor weight, float eps, bool trainable = false)
{
    public Var Weight { get; } = trainable ? Var.Leaf(weight, requiresGrad: true) : Var.Constant(weight);
    public float Eps { get; } = eps;

    public Var Forward(Tape tape, Var x) => tape.RmsNorm(x, Weight, Eps);
}
