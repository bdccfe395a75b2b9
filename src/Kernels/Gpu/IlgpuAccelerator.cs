using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace UioLlm.Kernels.Gpu;

/// <summary>
/// The ILGPU backend: one kernel source (<see cref="DeviceCode"/>) run on CUDA through ILGPU's PTX backend, or on
/// ILGPU's CPU accelerator (every simulated GPU thread an OS thread, with real shared memory, barriers and atomics:
/// slow, but the same kernel code, so CI checks the GPU kernels without a GPU). Tensors live in ILGPU buffers; every
/// copy and kernel goes, in order, on the accelerator's default stream.
/// </summary>
public sealed class IlgpuAccelerator : Accelerator
{
    private readonly Context context;
    private readonly IlgpuKernels kernels;
    private bool disposed;

    private IlgpuAccelerator(Context context, ILGPU.Runtime.Accelerator device, AcceleratorKind kind)
    {
        this.context = context;
        Device = device;
        Kind = kind;
        kernels = new IlgpuKernels(this);
    }

    /// <summary>The ILGPU accelerator underneath.</summary>
    public ILGPU.Runtime.Accelerator Device { get; }

    /// <summary>Serialises launches and copies: ILGPU streams and the CPU accelerator's thread team take one caller at a time.</summary>
    internal object Sync { get; } = new();

    public override AcceleratorKind Kind { get; }

    public override string Description => Kind == AcceleratorKind.IlgpuCpu
        ? $"ILGPU CPU accelerator (simulated GPU: warp {Device.WarpSize}, up to {Device.MaxNumThreadsPerGroup} threads a group)"
        : $"CUDA through ILGPU: {Device.Name} ({Device.NumMultiprocessors} SMs, {Device.MemorySize / (1 << 20)} MiB, {((CudaAccelerator)Device).Architecture})";

    public override IKernels Kernels => kernels;

    /// <summary>The concrete kernels (launch geometry, Supports).</summary>
    public IlgpuKernels IlgpuKernels => kernels;

    /// <summary>ILGPU's CPU accelerator simulating a GPU with warp 32 and up to <see cref="DeviceCode.MaxGroupThreads"/> threads a group, on any machine.</summary>
    public static IlgpuAccelerator CreateCpu()
    {
        // Warp 32 as on NVIDIA GPUs, and no more threads than the largest group the kernels use: every launch wakes
        // each simulated thread, so CPUDevice.Nvidia's 1024 threads made a launch cost ~8 ms here (64: under 1 ms).
        var cpuDevice = new CPUDevice(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: DeviceCode.MaxGroupThreads / 32, numMultiprocessors: 1);
        var context = Context.Create(b => b.CPU(cpuDevice).EnableAlgorithms().Assertions());
        try
        {
            var device = context.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
            return new IlgpuAccelerator(context, device, AcceleratorKind.IlgpuCpu);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>CUDA device 0 through ILGPU, or <see cref="AcceleratorUnavailableException"/> with the reason.</summary>
    public static IlgpuAccelerator OpenCuda()
    {
        string? reason = CudaUnavailableReason();
        if (reason is not null) throw new AcceleratorUnavailableException(reason);
        var context = Context.Create(b => b.Cuda().EnableAlgorithms());
        try
        {
            var device = context.CreateCudaAccelerator(0);
            return new IlgpuAccelerator(context, device, AcceleratorKind.Cuda);
        }
        catch (Exception e)
        {
            context.Dispose();
            throw new AcceleratorUnavailableException($"ILGPU could not open CUDA device 0: {e.Message}");
        }
    }

    /// <summary>Why CUDA through ILGPU cannot be used here, or null when it can.</summary>
    public static string? CudaUnavailableReason()
    {
        string lib = OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";
        if (!NativeLibrary.TryLoad(lib, out var handle)) return $"no CUDA driver: could not load {lib}";
        NativeLibrary.Free(handle);
        try
        {
            using var context = Context.Create(b => b.Cuda());
            var devices = context.GetCudaDevices();
            if (devices.Count == 0) return "the CUDA driver loads but ILGPU finds no usable NVIDIA device";
            var arch = devices[0].Architecture;
            if (arch is null) return $"ILGPU does not know the architecture of {devices[0].Name}";
            return null;
        }
        catch (Exception e)
        {
            return $"ILGPU could not query CUDA: {e.GetType().Name}: {e.Message}";
        }
    }

    public override void Synchronize()
    {
        lock (Sync) Device.Synchronize();
    }

    protected internal override DeviceMemory AllocateMemory(int length)
    {
        lock (Sync) return new IlgpuMemory(this, length);
    }

    internal bool IsDisposed => disposed;

    public override void Dispose()
    {
        if (disposed) return;
        disposed = true;
        base.Dispose();
        kernels.Release();
        Device.Dispose();
        context.Dispose();
    }
}

/// <summary>Float32 storage in an ILGPU buffer (device memory on CUDA, a host allocation on the CPU accelerator).</summary>
internal sealed class IlgpuMemory : DeviceMemory
{
    private readonly IlgpuAccelerator owner;
    private MemoryBuffer1D<float, Stride1D.Dense>? buffer;

    public IlgpuMemory(IlgpuAccelerator owner, int length) : base(owner, length)
    {
        this.owner = owner;
        buffer = owner.Device.Allocate1D<float>(Math.Max(length, 1));
        buffer.MemSetToZero();
        owner.Device.Synchronize();
    }

    private MemoryBuffer1D<float, Stride1D.Dense> Buffer =>
        buffer ?? throw new ObjectDisposedException(nameof(IlgpuMemory), "The tensor's memory was already released.");

    public override bool IsHostAccessible => false;

    public override Span<float> HostSpan(int offset, int count) =>
        throw new InvalidOperationException($"this tensor lives on {owner.Description}; use CopyTo/ToArray to read it on the host");

    public override nint Address(int offset) => Buffer.NativePtr + 4 * (nint)offset;

    /// <summary>Elements [offset, offset + count) as a kernel argument.</summary>
    public ArrayView<float> View(int offset, int count) => Buffer.View.SubView(offset, count).BaseView;

    public override void Upload(ReadOnlySpan<float> source, int offset)
    {
        if (source.Length == 0) return;
        lock (owner.Sync)
            View(offset, source.Length).CopyFromCPU(ref MemoryMarshal.GetReference(source), source.Length);
    }

    public override void Download(int offset, Span<float> destination)
    {
        if (destination.Length == 0) return;
        lock (owner.Sync)
            View(offset, destination.Length).CopyToCPU(ref MemoryMarshal.GetReference(destination), destination.Length);
    }

    protected override void Release()
    {
        lock (owner.Sync)
        {
            if (owner.IsDisposed) { buffer = null; return; }   // the ILGPU accelerator released it with everything else
            owner.Device.Synchronize();
            buffer?.Dispose();
            buffer = null;
        }
    }
}
