namespace UioLlm.Kernels;

/// <summary>
/// A block of float32 storage owned by one accelerator. The CPU backend keeps it in a pinned managed
/// array (so kernels may take raw pointers); a GPU backend keeps a device allocation.
/// </summary>
public abstract class DeviceMemory : IDisposable
{
    protected DeviceMemory(Accelerator accelerator, int length)
    {
        // Counted (and refused over the budget) here, before the derived class allocates anything.
        accelerator.Memory.Take((long)Math.Max(length, 1) * sizeof(float), "a tensor");
        Accelerator = accelerator;
        Length = length;
    }

    public Accelerator Accelerator { get; }

    /// <summary>Number of float32 elements.</summary>
    public int Length { get; }

    public bool IsDisposed { get; private set; }

    /// <summary>True when the memory can be read and written directly from the host (CPU backend).</summary>
    public abstract bool IsHostAccessible { get; }

    /// <summary>A host view of [offset, offset + count). Throws for device-only memory.</summary>
    public abstract Span<float> HostSpan(int offset, int count);

    /// <summary>Raw address of element <paramref name="offset"/>: a host pointer on CPU, a device pointer on GPU.</summary>
    public abstract nint Address(int offset);

    public abstract void Upload(ReadOnlySpan<float> source, int offset);

    public abstract void Download(int offset, Span<float> destination);

    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Release();
        Accelerator.Memory.Give((long)Math.Max(Length, 1) * sizeof(float));
        GC.SuppressFinalize(this);
    }

    protected abstract void Release();

    internal void ThrowIfDisposed()
    {
        if (IsDisposed) throw new ObjectDisposedException(nameof(DeviceMemory), "The tensor's memory was already released.");
    }
}
