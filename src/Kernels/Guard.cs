namespace UioLlm.Kernels;

/// <summary>Argument checks shared by every backend; each error names the op, the tensor and the shapes.</summary>
public static class Guard
{
    /// <summary>Throw unless <paramref name="t"/> has exactly the expected shape.</summary>
    public static void Shape(string op, Tensor t, string name, params int[] expected)
    {
        if (!t.Shape.SequenceEqual(expected))
            throw new ArgumentException($"{op}: {name} has shape {t.ShapeString}, expected {Tensor.FormatShape(expected)}", name);
    }

    /// <summary>Throw unless <paramref name="t"/> has the given rank.</summary>
    public static void Rank(string op, Tensor t, string name, int rank, string layout)
    {
        if (t.Rank != rank)
            throw new ArgumentException($"{op}: {name} has shape {t.ShapeString}, expected rank {rank} {layout}", name);
    }

    /// <summary>Throw unless <paramref name="t"/> has the given number of elements.</summary>
    public static void Length(string op, Tensor t, string name, int expected)
    {
        if (t.Length != expected)
            throw new ArgumentException($"{op}: {name} has shape {t.ShapeString} ({t.Length} elements), expected {expected} elements", name);
    }

    /// <summary>Throw unless both tensors have identical shapes.</summary>
    public static void SameShape(string op, Tensor a, string nameA, Tensor b, string nameB)
    {
        if (!a.Shape.SequenceEqual(b.Shape))
            throw new ArgumentException($"{op}: {nameB} has shape {b.ShapeString} but {nameA} has shape {a.ShapeString}; they must match", nameB);
    }

    /// <summary>Throw unless the tensor lives on the expected accelerator.</summary>
    public static void On(string op, Accelerator acc, Tensor t, string name)
    {
        if (!ReferenceEquals(t.Accelerator, acc))
            throw new ArgumentException($"{op}: {name} {t.ShapeString} belongs to another accelerator ({t.Accelerator.Description})", name);
        t.Memory.ThrowIfDisposed();
    }

    /// <summary>An optional gradient output: when given, it must live on <paramref name="acc"/> and match the shape of what it differentiates.</summary>
    public static void Gradient(string op, Accelerator acc, Tensor? grad, string gradName, Tensor of, string ofName)
    {
        if (grad is null) return;
        On(op, acc, grad, gradName);
        SameShape(op, of, ofName, grad, gradName);
        Writable(op, grad, gradName);
    }

    /// <summary>Throw when an op would write into a frozen tensor (see <see cref="Tensor.IsFrozen"/>).</summary>
    public static void Writable(string op, Tensor t, string name)
    {
        if (t.IsFrozen)
            throw new ArgumentException($"{op}: {name} {t} is frozen (its contents were promised not to change); call Unfreeze() before writing into it", name);
    }

    public static void Positive(string op, int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{op}: {name} must be positive");
    }

    public static void Finite(string op, float value, string name)
    {
        if (!float.IsFinite(value)) throw new ArgumentOutOfRangeException(name, value, $"{op}: {name} must be a finite number");
    }
}
