using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text;

namespace UioLlm.Kernels.Cuda;

/// <summary>What the probe found about device 0.</summary>
public sealed record CudaDeviceInfo(int Ordinal, string Name, int ComputeMajor, int ComputeMinor, long TotalMemoryBytes,
    int Multiprocessors, int MaxSharedPerBlockOptin, int DriverVersion, string NvrtcLibrary, Version NvrtcVersion)
{
    /// <summary>Compute capability as one number (9.0 -> 90).</summary>
    public int Architecture => ComputeMajor * 10 + ComputeMinor;

    public override string ToString() =>
        $"CUDA: {Name} (sm_{Architecture}, {Multiprocessors} SMs, {TotalMemoryBytes / (1 << 20)} MiB), driver {DriverVersion / 1000}.{DriverVersion % 1000 / 10}, NVRTC {NvrtcVersion}";
}

/// <summary>
/// The CUDA backend: the driver API through function pointers (libcuda.so.1 found at run time), the device's
/// primary context (made current on every thread that calls in), one stream on which every copy and kernel is
/// queued in order, and kernels compiled by NVRTC for the device's architecture at first use.
/// </summary>
public sealed unsafe class CudaAccelerator : Accelerator
{
    private readonly CudaDriver driver;
    private readonly Nvrtc nvrtc;
    private readonly int device;
    private readonly nint context;
    private readonly nint stream;
    private readonly bool asyncAlloc;
    private readonly CudaKernels kernels;
    private readonly ConcurrentDictionary<string, nint> modules = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<(string, string), CudaFunction> functions = new();
    private readonly object compileLock = new();
    private readonly object launchLock = new();
    private string? lastKernel;
    private bool disposed;

    [ThreadStatic] private static nint currentContext;

    private CudaAccelerator(CudaDriver driver, Nvrtc nvrtc, CudaDeviceInfo info)
    {
        this.driver = driver;
        this.nvrtc = nvrtc;
        Info = info;
        int dev;
        driver.Check(driver.DeviceGet(&dev, info.Ordinal), "cuDeviceGet");
        device = dev;
        nint ctx;
        driver.Check(driver.DevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
        context = ctx;
        Bind();
        nint s;
        driver.Check(driver.StreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
        stream = s;
        int pools = 0;
        asyncAlloc = driver.MemAllocAsync is not null && driver.MemFreeAsync is not null
            && driver.DeviceGetAttribute(&pools, CudaDriver.AttrMemoryPoolsSupported, dev) == CudaDriver.Success && pools != 0;
        SynchronizeEachLaunch = Environment.GetEnvironmentVariable("UIOLLM_CUDA_SYNC") == "1";
        kernels = new CudaKernels(this);
    }

    /// <summary>Open device 0, or throw <see cref="AcceleratorUnavailableException"/> with the reason.</summary>
    public static CudaAccelerator Open()
    {
        var (driver, nvrtc, info, reason) = Probe();
        if (reason is not null) throw new AcceleratorUnavailableException(reason);
        return new CudaAccelerator(driver!, nvrtc!, info!);
    }

    /// <summary>Why CUDA cannot be used here, or null when it can (driver, a device and NVRTC all present).</summary>
    public static string? UnavailableReason() => Probe().Reason;

    private static (CudaDriver?, Nvrtc?, CudaDeviceInfo?, string? Reason) Probe()
    {
        var driver = CudaDriver.TryLoad(out string? why);
        if (driver is null) return (null, null, null, why);
        int count = 0, rc = driver.DeviceGetCount(&count);
        if (rc != CudaDriver.Success) return (null, null, null, $"cuDeviceGetCount failed: {driver.Describe(rc)}");
        if (count == 0) return (null, null, null, "the CUDA driver reports no device");
        var nvrtc = Nvrtc.TryLoad(out why);
        if (nvrtc is null) return (null, null, null, why);
        try
        {
            int dev, major, minor, sms, smem, version;
            nuint total;
            driver.Check(driver.DeviceGet(&dev, 0), "cuDeviceGet");
            var name = stackalloc byte[256];
            driver.Check(driver.DeviceGetName(name, 256, dev), "cuDeviceGetName");
            driver.Check(driver.DeviceGetAttribute(&major, CudaDriver.AttrComputeCapabilityMajor, dev), "cuDeviceGetAttribute(major)");
            driver.Check(driver.DeviceGetAttribute(&minor, CudaDriver.AttrComputeCapabilityMinor, dev), "cuDeviceGetAttribute(minor)");
            driver.Check(driver.DeviceGetAttribute(&sms, CudaDriver.AttrMultiprocessorCount, dev), "cuDeviceGetAttribute(SMs)");
            driver.Check(driver.DeviceGetAttribute(&smem, CudaDriver.AttrMaxSharedPerBlockOptin, dev), "cuDeviceGetAttribute(shared)");
            driver.Check(driver.DeviceTotalMem(&total, dev), "cuDeviceTotalMem");
            driver.Check(driver.DriverGetVersion(&version), "cuDriverGetVersion");
            if (major < 7)
                return (null, null, null, $"{Marshal.PtrToStringUTF8((nint)name)} has compute capability {major}.{minor}; the CUDA kernels need 7.0 or newer");
            var info = new CudaDeviceInfo(0, Marshal.PtrToStringUTF8((nint)name) ?? "?", major, minor, (long)total, sms, smem, version,
                nvrtc.LibraryPath, nvrtc.Version);
            return (driver, nvrtc, info, null);
        }
        catch (CudaException e)
        {
            return (null, null, null, e.Message);
        }
    }

    public CudaDeviceInfo Info { get; }

    public override AcceleratorKind Kind => AcceleratorKind.Cuda;

    public override string Description => Info.ToString();

    public override IKernels Kernels => kernels;

    /// <summary>The concrete kernels (for options such as the tensor-core GEMM switch).</summary>
    public CudaKernels CudaKernels => kernels;

    /// <summary>Synchronize after every launch so an asynchronous fault names its kernel (UIOLLM_CUDA_SYNC=1).</summary>
    public bool SynchronizeEachLaunch { get; set; }

    internal CudaDriver Driver => driver;

    internal nint Stream => stream;

    /// <summary>Make the primary context current on this thread (cheap when it already is).</summary>
    internal void Bind()
    {
        if (disposed) throw new ObjectDisposedException(nameof(CudaAccelerator));
        if (currentContext == context) return;
        driver.Check(driver.CtxSetCurrent(context), "cuCtxSetCurrent");
        currentContext = context;
    }

    public override void Synchronize()
    {
        Bind();
        int rc = driver.StreamSynchronize(stream);
        if (rc != CudaDriver.Success)
            throw new CudaException($"cuStreamSynchronize failed after kernel '{lastKernel ?? "(none)"}': {driver.Describe(rc)}");
    }

    protected internal override DeviceMemory AllocateMemory(int length) => new CudaMemory(this, length);

    /// <summary>Raw device bytes (zeroed when asked), freed in stream order by <see cref="Free"/>.</summary>
    internal ulong Allocate(long bytes, bool zero)
    {
        Bind();
        ulong p;
        nuint size = (nuint)Math.Max(bytes, 4);
        int rc = asyncAlloc ? driver.MemAllocAsync(&p, size, stream) : driver.MemAlloc(&p, size);
        if (rc != CudaDriver.Success)
        {
            // The stream-ordered pool may hold freed blocks: release them and try once more.
            Synchronize();
            rc = asyncAlloc ? driver.MemAllocAsync(&p, size, stream) : driver.MemAlloc(&p, size);
            driver.Check(rc, $"cuMemAlloc({bytes} bytes)");
        }
        if (zero) driver.Check(driver.MemsetD32Async(p, 0, size / 4, stream), "cuMemsetD32Async");
        return p;
    }

    internal void Free(ulong pointer)
    {
        if (disposed || pointer == 0) return;
        Bind();
        driver.Check(asyncAlloc ? driver.MemFreeAsync(pointer, stream) : driver.MemFree(pointer), "cuMemFree");
    }

    internal void CopyToDevice(ulong dst, void* src, long bytes)
    {
        if (bytes == 0) return;
        Bind();
        // From pageable memory this returns once the source is staged, so the caller may release it.
        driver.Check(driver.MemcpyHtoDAsync(dst, src, (nuint)bytes, stream), "cuMemcpyHtoDAsync");
    }

    internal void CopyToHost(void* dst, ulong src, long bytes)
    {
        if (bytes == 0) return;
        Bind();
        driver.Check(driver.MemcpyDtoHAsync(dst, src, (nuint)bytes, stream), "cuMemcpyDtoHAsync");
        Synchronize();
    }

    internal void CopyDevice(ulong dst, ulong src, long bytes)
    {
        if (bytes == 0) return;
        Bind();
        driver.Check(driver.MemcpyDtoDAsync(dst, src, (nuint)bytes, stream), "cuMemcpyDtoDAsync");
    }

    internal void Fill32(ulong dst, uint bits, long count)
    {
        if (count == 0) return;
        Bind();
        driver.Check(driver.MemsetD32Async(dst, bits, (nuint)count, stream), "cuMemsetD32Async");
    }

    /// <summary>A kernel of an embedded source, compiled (or read from the disk cache) at first use.</summary>
    internal CudaFunction Function(string source, string kernel) =>
        functions.GetOrAdd((source, kernel), key =>
        {
            nint module = Module(key.Item1);
            nint f;
            var name = Encoding.UTF8.GetBytes(key.Item2 + "\0");
            fixed (byte* n = name) driver.Check(driver.ModuleGetFunction(&f, module, n), $"cuModuleGetFunction({key.Item2} in {key.Item1})");
            return new CudaFunction(key.Item2, f);
        });

    private nint Module(string source)
    {
        if (modules.TryGetValue(source, out nint m)) return m;
        lock (compileLock)
        {
            if (modules.TryGetValue(source, out m)) return m;
            Bind();
            byte[] image = CompiledImage(source);
            fixed (byte* p = image) driver.Check(driver.ModuleLoadData(&m, p), $"cuModuleLoadData({source})");
            modules[source] = m;
            return m;
        }
    }

    /// <summary>The folder of the on-disk kernel cache (UIOLLM_CUDA_CACHE, else ~/.cache/uiollm/cuda), or null when disabled ("off").</summary>
    public static string? CacheFolder
    {
        get
        {
            string? env = Environment.GetEnvironmentVariable("UIOLLM_CUDA_CACHE");
            if (env == "off") return null;
            if (!string.IsNullOrEmpty(env)) return env;
            string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return string.IsNullOrEmpty(home) ? null : Path.Combine(home, ".cache", "uiollm", "cuda");
        }
    }

    private byte[] CompiledImage(string source)
    {
        int arch = Info.Architecture;
        string? folder = CacheFolder;
        string? path = folder is null ? null : Path.Combine(folder, $"{Path.GetFileNameWithoutExtension(source)}-sm{arch}-{CudaSources.CacheKey(source, arch, nvrtc.Version)}.bin");
        if (path is not null && File.Exists(path))
        {
            try { return File.ReadAllBytes(path); }
            catch (IOException) { }
        }
        var result = nvrtc.Compile(source, CudaSources.Get(source), CudaSources.Headers, arch, CudaSources.Options);
        CompileReports.Add(result);
        if (path is not null)
        {
            try
            {
                Directory.CreateDirectory(folder!);
                string tmp = path + "." + Environment.ProcessId + ".tmp";
                File.WriteAllBytes(tmp, result.Image);
                File.Move(tmp, path, overwrite: true);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return result.Image;
    }

    /// <summary>Compilations done by this accelerator (not those read from the disk cache): logs and register reports.</summary>
    public ConcurrentBag<NvrtcResult> CompileReports { get; } = new();

    /// <summary>Registers and local (spill/stack) bytes of a loaded kernel, from the driver.</summary>
    public (int Registers, int LocalBytes) FunctionResources(string source, string kernel)
    {
        var f = Function(source, kernel);
        int regs, local;
        driver.Check(driver.FuncGetAttribute(&regs, CudaDriver.FuncAttrNumRegs, f.Handle), "cuFuncGetAttribute(NUM_REGS)");
        driver.Check(driver.FuncGetAttribute(&local, CudaDriver.FuncAttrLocalSizeBytes, f.Handle), "cuFuncGetAttribute(LOCAL_SIZE_BYTES)");
        return (regs, local);
    }

    /// <summary>Queue a kernel on the stream. Errors name the kernel and the CUDA error.</summary>
    internal void Launch(CudaFunction f, LaunchShape shape, ReadOnlySpan<KernelArg> args)
    {
        shape.Validate(f.Name, Info.MaxSharedPerBlockOptin);
        if (shape.IsEmpty) return;
        Bind();
        if (shape.SharedBytes > 48 * 1024 && f.DynamicSharedLimit < shape.SharedBytes)
        {
            driver.Check(driver.FuncSetAttribute(f.Handle, CudaDriver.FuncAttrMaxDynamicSharedSizeBytes, shape.SharedBytes),
                $"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES = {shape.SharedBytes}) for kernel '{f.Name}'");
            f.DynamicSharedLimit = shape.SharedBytes;
        }
        long* values = stackalloc long[Math.Max(1, args.Length)];
        void** pointers = stackalloc void*[Math.Max(1, args.Length)];
        KernelArg.Pack(args, values, pointers);
        int rc;
        lock (launchLock)
        {
            lastKernel = f.Name;
            rc = driver.LaunchKernel(f.Handle, shape.GridX, shape.GridY, shape.GridZ, shape.BlockX, shape.BlockY, shape.BlockZ,
                (uint)shape.SharedBytes, stream, pointers, null);
        }
        if (rc != CudaDriver.Success)
            throw new CudaException($"launch of kernel '{f.Name}' ({shape}) failed: {driver.Describe(rc)}");
        if (SynchronizeEachLaunch) Synchronize();
    }

    public override void Dispose()
    {
        if (disposed) return;
        try { Synchronize(); } catch (CudaException) { }
        base.Dispose();
        kernels.ReleaseScratch();
        Bind();
        foreach (nint m in modules.Values) _ = driver.ModuleUnload(m);
        modules.Clear();
        functions.Clear();
        _ = driver.StreamSynchronize(stream);
        _ = driver.StreamDestroy(stream);
        disposed = true;
        _ = driver.DevicePrimaryCtxRelease(device);
        currentContext = 0;
    }
}

/// <summary>A loaded kernel and the dynamic shared memory it was opened up to.</summary>
internal sealed class CudaFunction(string name, nint handle)
{
    public string Name { get; } = name;
    public nint Handle { get; } = handle;
    public int DynamicSharedLimit { get; set; } = 48 * 1024;
}

/// <summary>Device storage of a tensor: not host-accessible; <see cref="Address"/> is the device pointer.</summary>
internal sealed unsafe class CudaMemory : DeviceMemory
{
    private readonly CudaAccelerator cuda;
    private ulong pointer;

    public CudaMemory(CudaAccelerator accelerator, int length) : base(accelerator, length)
    {
        cuda = accelerator;
        pointer = accelerator.Allocate(4L * Math.Max(length, 1), zero: true);
    }

    ~CudaMemory()
    {
        // A forgotten tensor: give the block back in stream order (ignored once the accelerator is gone).
        try { cuda.Free(Interlocked.Exchange(ref pointer, 0)); }
        catch (Exception) { }
    }

    public override bool IsHostAccessible => false;

    private ulong Pointer => pointer != 0 ? pointer : throw new ObjectDisposedException(nameof(CudaMemory), "The tensor's memory was already released.");

    public override Span<float> HostSpan(int offset, int count) =>
        throw new InvalidOperationException($"this tensor lives in GPU memory ({cuda.Info.Name}); use CopyTo/ToArray (Download) to read it on the host");

    public override nint Address(int offset) => (nint)(Pointer + 4UL * (uint)offset);

    public override void Upload(ReadOnlySpan<float> source, int offset)
    {
        CheckRange(offset, source.Length);
        fixed (float* s = source) cuda.CopyToDevice(Pointer + 4UL * (uint)offset, s, 4L * source.Length);
    }

    public override void Download(int offset, Span<float> destination)
    {
        CheckRange(offset, destination.Length);
        fixed (float* d = destination) cuda.CopyToHost(d, Pointer + 4UL * (uint)offset, 4L * destination.Length);
    }

    private void CheckRange(int offset, int count)
    {
        if (offset < 0 || count < 0 || (long)offset + count > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, {(long)offset + count}) is outside device memory of {Length} elements");
    }

    protected override void Release()
    {
        cuda.Free(Interlocked.Exchange(ref pointer, 0));
        GC.SuppressFinalize(this);
    }
}
