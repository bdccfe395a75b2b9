using System.Text;

namespace UioLlm.Kernels;

/// <summary>
/// A float32 tensor: a shape over contiguous row-major storage. Views along the first axis
/// (<see cref="Slice"/>, <see cref="Row"/>) and reshapes (<see cref="View"/>) share the storage.
/// </summary>
public sealed class Tensor : IDisposable
{
    private readonly int[] shape;
    private readonly bool ownsMemory;
    private readonly ScratchPool? pool;

    internal Tensor(DeviceMemory memory, int offset, int[] shape, string? name, bool ownsMemory, ScratchPool? pool = null)
    {
        Memory = memory;
        Offset = offset;
        this.shape = shape;
        Name = name;
        this.ownsMemory = ownsMemory;
        this.pool = pool;
        Length = ElementCount(shape, name);
        if (offset < 0 || (long)offset + Length > memory.Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"tensor {Describe(name, shape)} at offset {offset} does not fit in storage of {memory.Length} elements");
    }

    public DeviceMemory Memory { get; }

    /// <summary>Element offset of this tensor's first element inside <see cref="Memory"/>.</summary>
    public int Offset { get; }

    public int Length { get; }

    public string? Name { get; }

    public Accelerator Accelerator => Memory.Accelerator;

    public ReadOnlySpan<int> Shape => shape;

    public int Rank => shape.Length;

    /// <summary>Size of an axis; negative axes count from the end.</summary>
    public int Dim(int axis)
    {
        int a = axis < 0 ? shape.Length + axis : axis;
        if ((uint)a >= (uint)shape.Length)
            throw new ArgumentOutOfRangeException(nameof(axis), $"axis {axis} is out of range for tensor {this}");
        return shape[a];
    }

    /// <summary>Host view of the elements (CPU backend only).</summary>
    public Span<float> Span
    {
        get
        {
            Memory.ThrowIfDisposed();
            return Memory.HostSpan(Offset, Length);
        }
    }

    /// <summary>Raw address of the first element (host pointer on CPU, device pointer on GPU).</summary>
    public nint Address
    {
        get
        {
            Memory.ThrowIfDisposed();
            return Memory.Address(Offset);
        }
    }

    /// <summary>Host pointer to the first element; valid for the tensor's lifetime (CPU storage is pinned).</summary>
    public unsafe float* Pointer
    {
        get
        {
            if (!Memory.IsHostAccessible)
                throw new InvalidOperationException($"tensor {this} lives in device memory; use CopyTo/ToArray to read it on the host");
            return (float*)Address;
        }
    }

    public string ShapeString => FormatShape(shape);

    /// <summary>Rows [start, start + count) along the first axis, as a view.</summary>
    public Tensor Slice(int start, int count)
    {
        if (Rank == 0) throw new InvalidOperationException($"cannot slice scalar tensor {this}");
        if (start < 0 || count < 0 || start + count > shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"slice [{start}, {start + count}) is outside the first axis of {this}");
        var s = (int[])shape.Clone();
        s[0] = count;
        return new Tensor(Memory, Offset + start * RowLength, s, Name, ownsMemory: false);
    }

    /// <summary>Element <paramref name="index"/> along the first axis, with that axis removed, as a view.</summary>
    public Tensor Row(int index)
    {
        if (Rank == 0) throw new InvalidOperationException($"cannot index scalar tensor {this}");
        if ((uint)index >= (uint)shape[0])
            throw new ArgumentOutOfRangeException(nameof(index), $"row {index} is outside the first axis of {this}");
        return new Tensor(Memory, Offset + index * RowLength, shape[1..], Name, ownsMemory: false);
    }

    /// <summary>The same elements under another shape of equal element count (one axis may be -1).</summary>
    public Tensor View(params int[] newShape)
    {
        var s = (int[])newShape.Clone();
        int infer = Array.IndexOf(s, -1);
        if (infer >= 0)
        {
            long known = 1;
            for (int i = 0; i < s.Length; i++) if (i != infer) known *= s[i];
            if (known == 0 || Length % known != 0)
                throw new ArgumentException($"cannot view {this} as {FormatShape(newShape)}", nameof(newShape));
            s[infer] = (int)(Length / known);
        }
        if (ElementCount(s, Name) != Length)
            throw new ArgumentException($"cannot view {this} ({Length} elements) as {FormatShape(s)}", nameof(newShape));
        return new Tensor(Memory, Offset, s, Name, ownsMemory: false);
    }

    /// <summary>A view that carries a name for error messages.</summary>
    public Tensor Named(string name) => new(Memory, Offset, (int[])shape.Clone(), name, ownsMemory: false);

    public void CopyFrom(ReadOnlySpan<float> source)
    {
        if (IsFrozen)
            throw new InvalidOperationException($"tensor {this} is frozen (its contents were promised not to change); call Unfreeze() before writing into it");
        if (source.Length != Length)
            throw new ArgumentException($"source has {source.Length} elements but tensor {this} has {Length}", nameof(source));
        Memory.ThrowIfDisposed();
        Memory.Upload(source, Offset);
    }

    public void CopyTo(Span<float> destination)
    {
        if (destination.Length != Length)
            throw new ArgumentException($"destination has {destination.Length} elements but tensor {this} has {Length}", nameof(destination));
        Memory.ThrowIfDisposed();
        Memory.Download(Offset, destination);
    }

    public float[] ToArray()
    {
        var a = new float[Length];
        CopyTo(a);
        return a;
    }

    /// <summary>
    /// True after <see cref="Freeze"/>: the caller promises the elements no longer change, so a backend may keep
    /// derived copies (the CPU GEMM keeps this matrix pre-packed in its micro-panel order). Frozen weights of a
    /// model are the typical case; writing into a frozen tensor through the kernels is refused.
    /// </summary>
    public bool IsFrozen { get; private set; }

    /// <summary>Promise that the elements will not change (see <see cref="IsFrozen"/>).</summary>
    public void Freeze() => IsFrozen = true;

    /// <summary>Allow changes again; derived copies a backend kept are dropped.</summary>
    public void Unfreeze()
    {
        IsFrozen = false;
        KernelCache = null;
    }

    /// <summary>Backend data derived from a frozen tensor's elements (e.g. packed GEMM panels); dropped on unfreeze.</summary>
    internal object? KernelCache { get; set; }

    public void Dispose()
    {
        KernelCache = null;
        if (pool is not null) pool.Return(Memory);
        else if (ownsMemory) Memory.Dispose();
    }

    public override string ToString() => Describe(Name, shape);

    internal int RowLength
    {
        get
        {
            int r = 1;
            for (int i = 1; i < shape.Length; i++) r *= shape[i];
            return r;
        }
    }

    internal static string Describe(string? name, int[] shape) =>
        name is null ? FormatShape(shape) : $"'{name}' {FormatShape(shape)}";

    internal static string FormatShape(ReadOnlySpan<int> shape)
    {
        var sb = new StringBuilder("[");
        for (int i = 0; i < shape.Length; i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append(shape[i]);
        }
        return sb.Append(']').ToString();
    }

    internal static int ElementCount(ReadOnlySpan<int> shape, string? name)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"tensor {Describe(name, shape.ToArray())} has a negative dimension", nameof(shape));
            n *= d;
            if (n > int.MaxValue)
                throw new ArgumentException($"tensor {Describe(name, shape.ToArray())} has more than {int.MaxValue} elements", nameof(shape));
        }
        return (int)n;
    }
}
