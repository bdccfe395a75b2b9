using UioLlm.Kernels;

namespace UioLlm.Model.Autograd;

/// <summary>
/// A value in a differentiable computation: a tensor, an optional gradient of the same shape, and whether
/// gradients flow to it. Leaves (parameters, inputs, detached memories) own their gradient, which
/// accumulates across every tape that uses them; values produced by an op belong to the tape that recorded
/// the op and are freed with it.
/// </summary>
public sealed class Var
{
    private readonly Tensor value;
    private readonly bool ownsValue;
    private Tensor? grad;

    private Var(Tensor value, bool requiresGrad, Tape? producer, bool ownsValue, string? name)
    {
        this.value = value;
        RequiresGrad = requiresGrad;
        Producer = producer;
        this.ownsValue = ownsValue;
        Name = name ?? value.Name;
    }

    /// <summary>A leaf over an existing tensor (not owned: the caller keeps disposing it).</summary>
    public static Var Leaf(Tensor value, bool requiresGrad = false, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(value);
        return new Var(value, requiresGrad, null, ownsValue: false, name);
    }

    /// <summary>A constant leaf (no gradient), e.g. a frozen weight.</summary>
    public static Var Constant(Tensor value, string? name = null) => Leaf(value, false, name);

    internal static Var Produced(Tensor value, bool requiresGrad, Tape tape, string? name) =>
        new(value, requiresGrad, tape, ownsValue: false, name);

    public string? Name { get; }

    /// <summary>Whether gradients flow into this value (set for parameters and for ops over them).</summary>
    public bool RequiresGrad { get; }

    /// <summary>The tape that recorded the op producing this value; null for leaves.</summary>
    public Tape? Producer { get; }

    public bool IsLeaf => Producer is null;

    public Tensor Value
    {
        get
        {
            Producer?.ThrowIfFreed(this);
            return value;
        }
    }

    /// <summary>The accumulated gradient, or null when nothing has flowed into this value yet.</summary>
    public Tensor? Grad
    {
        get
        {
            Producer?.ThrowIfFreed(this);
            return grad;
        }
    }

    public ReadOnlySpan<int> Shape => Value.Shape;

    public Accelerator Accelerator => value.Accelerator;

    /// <summary>
    /// The gradient buffer, allocated zero-filled on first use: leaves own theirs, produced values rent
    /// theirs from their tape. Null when this value does not require a gradient.
    /// </summary>
    internal Tensor? GradForAccumulate()
    {
        if (!RequiresGrad) return null;
        if (grad is not null) return grad;
        grad = Producer is null
            ? value.Accelerator.Allocate(value.Shape, GradName)
            : Producer.RentGradient(value.Shape, GradName);
        if (Producer is null) value.Accelerator.Kernels.Fill(grad, 0f);
        return grad;
    }

    private string? GradName => Name is null ? null : "d" + Name;

    /// <summary>Sets the gradient of a leaf to zero (allocating it if needed).</summary>
    public void ZeroGrad()
    {
        if (!IsLeaf) throw new InvalidOperationException($"ZeroGrad: '{Name ?? "value"}' is not a leaf; only leaves keep gradients between tapes");
        if (!RequiresGrad) return;
        if (grad is null) GradForAccumulate();
        else value.Accelerator.Kernels.Fill(grad, 0f);
    }

    /// <summary>
    /// A new leaf holding a copy of this value, cut from the graph that produced it: gradients that flow
    /// into the copy accumulate in its own <see cref="Grad"/> (UIO's m~ leaf) and can later be fed back
    /// into the producing tape with <see cref="Tape.Backward(IReadOnlyList{Var}, IReadOnlyList{Tensor})"/>.
    /// The copy outlives the producing tape; dispose it when done.
    /// </summary>
    public Var DetachAsLeaf(bool requiresGrad = true, string? name = null)
    {
        var source = Value;
        var copy = source.Accelerator.Allocate(source.Shape, name ?? Name);
        source.Accelerator.Kernels.Copy(source, copy);
        return new Var(copy, requiresGrad, null, ownsValue: true, name ?? Name);
    }

    /// <summary>Frees what a leaf owns: its gradient and, for detached copies, its value.</summary>
    public void DisposeLeaf()
    {
        if (!IsLeaf) throw new InvalidOperationException($"DisposeLeaf: '{Name ?? "value"}' belongs to a tape; free the tape instead");
        grad?.Dispose();
        grad = null;
        if (ownsValue) value.Dispose();
    }

    internal void DropTapeGrad() => grad = null;

    public override string ToString() => $"Var {(Name is null ? "" : $"'{Name}' ")}{value.ShapeString}{(RequiresGrad ? " requires grad" : "")}";
}
