namespace UioLlm.Kernels;

public enum AcceleratorKind
{
    /// <summary>The best usable backend: CUDA (through ILGPU) when a usable NVIDIA GPU is present, else the CPU SIMD kernels
    /// (the reason is in <see cref="Accelerator.FallbackReason"/>).</summary>
    Auto,
    /// <summary>The CPU SIMD kernels.</summary>
    Cpu,
    /// <summary>The ILGPU kernels on an NVIDIA GPU (PTX through ILGPU's CUDA backend).</summary>
    Cuda,
    /// <summary>The same ILGPU kernels on ILGPU's CPU accelerator (a simulated GPU: for tests and for stepping through a kernel; slow).</summary>
    IlgpuCpu,
}

/// <summary>Thrown when a requested backend cannot be used on this machine.</summary>
public sealed class AcceleratorUnavailableException(string message) : Exception(message);

/// <summary>
/// A compute device: allocates tensors and exposes the op contract (<see cref="Kernels"/>).
/// </summary>
public abstract class Accelerator : IDisposable
{
    protected Accelerator()
    {
        Scratch = new ScratchPool(this);
    }

    /// <summary>Create an accelerator. <paramref name="threads"/> bounds CPU parallelism (0 = all cores).</summary>
    public static Accelerator Create(AcceleratorKind kind = AcceleratorKind.Auto, int threads = 0)
    {
        switch (kind)
        {
            case AcceleratorKind.Cpu:
                return new Cpu.CpuAccelerator(threads);
            case AcceleratorKind.Cuda:
                return Gpu.IlgpuAccelerator.OpenCuda();
            case AcceleratorKind.IlgpuCpu:
                return Gpu.IlgpuAccelerator.CreateCpu();
            case AcceleratorKind.Auto:
            {
                string? reason = Environment.GetEnvironmentVariable("UIOLLM_NO_GPU") == "1"
                    ? "UIOLLM_NO_GPU=1"
                    : Gpu.IlgpuAccelerator.CudaUnavailableReason();
                if (reason is null)
                {
                    try
                    {
                        return Gpu.IlgpuAccelerator.OpenCuda();
                    }
                    catch (AcceleratorUnavailableException e)
                    {
                        reason = e.Message;
                    }
                }
                return new Cpu.CpuAccelerator(threads) { FallbackReason = $"CUDA not used: {reason}; using the CPU kernels" };
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "expected Auto, Cpu, Cuda or IlgpuCpu");
        }
    }

    public abstract AcceleratorKind Kind { get; }

    /// <summary>Human-readable device description (e.g. "CPU: 2 threads, AVX2+FMA").</summary>
    public abstract string Description { get; }

    /// <summary>Why <see cref="AcceleratorKind.Auto"/> did not pick a faster backend, if it did not.</summary>
    public string? FallbackReason { get; internal init; }

    /// <summary>Every op, forward and backward.</summary>
    public abstract IKernels Kernels { get; }

    /// <summary>Pooled scratch tensors.</summary>
    public ScratchPool Scratch { get; }

    /// <summary>
    /// The bytes this accelerator's tensors (and any reservations) hold, against an optional limit: with
    /// <see cref="MemoryBudget.LimitBytes"/> set, an allocation that would pass it throws
    /// <see cref="MemoryBudgetExceededException"/> before anything is allocated.
    /// </summary>
    public MemoryBudget Memory { get; } = new();

    /// <summary>A new zero-filled tensor.</summary>
    public Tensor Allocate(ReadOnlySpan<int> shape, string? name = null)
    {
        int[] s = shape.ToArray();
        int n = Tensor.ElementCount(s, name);
        return new Tensor(AllocateMemory(n), 0, s, name, ownsMemory: true);
    }

    public Tensor Allocate(params int[] shape) => Allocate(shape.AsSpan());

    /// <summary>A new tensor holding a copy of <paramref name="data"/>.</summary>
    public Tensor FromArray(ReadOnlySpan<float> data, ReadOnlySpan<int> shape, string? name = null)
    {
        var t = Allocate(shape, name);
        t.CopyFrom(data);
        return t;
    }

    public Tensor FromArray(float[] data, params int[] shape) => FromArray(data, shape, null);

    /// <summary>Wait until every queued operation has finished (no-op on CPU).</summary>
    public abstract void Synchronize();

    /// <summary>Zero-filled storage of <paramref name="length"/> floats.</summary>
    protected internal abstract DeviceMemory AllocateMemory(int length);

    public virtual void Dispose()
    {
        Scratch.Trim();
        GC.SuppressFinalize(this);
    }
}
