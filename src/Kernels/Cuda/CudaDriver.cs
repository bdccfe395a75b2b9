using System.Runtime.InteropServices;

namespace UioLlm.Kernels.Cuda;

/// <summary>A CUDA driver or NVRTC call failed; the message names the call (and kernel) and the CUDA error.</summary>
public sealed class CudaException(string message) : Exception(message);

/// <summary>
/// The CUDA driver API (libcuda.so.1), resolved at run time through <see cref="NativeLibrary"/> and called
/// through unmanaged function pointers: nothing is linked at build time, so the assembly loads on machines
/// without a driver and <see cref="TryLoad"/> says why CUDA cannot be used.
/// </summary>
internal sealed unsafe class CudaDriver
{
    public const int Success = 0;

    // CUdevice_attribute values used here (cuda.h).
    public const int AttrMaxSharedPerBlockOptin = 97;
    public const int AttrMultiprocessorCount = 16;
    public const int AttrComputeCapabilityMajor = 75;
    public const int AttrComputeCapabilityMinor = 76;
    public const int AttrMemoryPoolsSupported = 115;

    // CUfunction_attribute values.
    public const int FuncAttrLocalSizeBytes = 3;
    public const int FuncAttrNumRegs = 4;
    public const int FuncAttrMaxDynamicSharedSizeBytes = 8;

    private readonly nint library;

    private CudaDriver(nint library) => this.library = library;

    public delegate* unmanaged<uint, int> Init;
    public delegate* unmanaged<int*, int> DriverGetVersion;
    public delegate* unmanaged<int*, int> DeviceGetCount;
    public delegate* unmanaged<int*, int, int> DeviceGet;
    public delegate* unmanaged<byte*, int, int, int> DeviceGetName;
    public delegate* unmanaged<int*, int, int, int> DeviceGetAttribute;
    public delegate* unmanaged<nuint*, int, int> DeviceTotalMem;
    public delegate* unmanaged<nint*, int, int> DevicePrimaryCtxRetain;
    public delegate* unmanaged<int, int> DevicePrimaryCtxRelease;
    public delegate* unmanaged<nint, int> CtxSetCurrent;
    public delegate* unmanaged<int> CtxSynchronize;
    public delegate* unmanaged<ulong*, nuint, int> MemAlloc;
    public delegate* unmanaged<ulong, int> MemFree;
    public delegate* unmanaged<ulong*, nuint, nint, int> MemAllocAsync;   // optional (CUDA 11.2+)
    public delegate* unmanaged<ulong, nint, int> MemFreeAsync;            // optional
    public delegate* unmanaged<ulong, void*, nuint, nint, int> MemcpyHtoDAsync;
    public delegate* unmanaged<void*, ulong, nuint, nint, int> MemcpyDtoHAsync;
    public delegate* unmanaged<ulong, ulong, nuint, nint, int> MemcpyDtoDAsync;
    public delegate* unmanaged<ulong, uint, nuint, nint, int> MemsetD32Async;
    public delegate* unmanaged<nint*, uint, int> StreamCreate;
    public delegate* unmanaged<nint, int> StreamSynchronize;
    public delegate* unmanaged<nint, int> StreamDestroy;
    public delegate* unmanaged<nint*, void*, int> ModuleLoadData;
    public delegate* unmanaged<nint*, nint, byte*, int> ModuleGetFunction;
    public delegate* unmanaged<nint, int> ModuleUnload;
    public delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> LaunchKernel;
    public delegate* unmanaged<nint, int, int, int> FuncSetAttribute;
    public delegate* unmanaged<int*, int, nint, int> FuncGetAttribute;
    public delegate* unmanaged<int, byte**, int> GetErrorName;
    public delegate* unmanaged<int, byte**, int> GetErrorString;

    /// <summary>The library names tried, in order.</summary>
    public static readonly string[] LibraryNames = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"];

    private static readonly Lazy<(CudaDriver? Driver, string? Reason)> shared = new(Load);

    /// <summary>The process-wide driver, or null with the reason it cannot be used (no library, missing exports, cuInit failed).</summary>
    public static CudaDriver? TryLoad(out string? reason)
    {
        var (driver, why) = shared.Value;
        reason = why;
        return driver;
    }

    private static (CudaDriver?, string?) Load()
    {
        string? overridePath = Environment.GetEnvironmentVariable("UIOLLM_LIBCUDA");
        nint lib = 0;
        foreach (string name in string.IsNullOrEmpty(overridePath) ? LibraryNames : [overridePath])
            if (NativeLibrary.TryLoad(name, out lib)) break;
        if (lib == 0)
            return (null, $"no CUDA driver: could not load {(string.IsNullOrEmpty(overridePath) ? string.Join(" or ", LibraryNames) : overridePath)}");
        var d = new CudaDriver(lib);
        var missing = new List<string>();
        d.Bind(missing);
        if (missing.Count > 0)
            return (null, $"the CUDA driver library lacks {string.Join(", ", missing)} (driver too old?)");
        int rc = d.Init(0);
        if (rc != Success) return (null, $"cuInit failed: {d.Describe(rc)}");
        return (d, null);
    }

    private void Bind(List<string> missing)
    {
        Init = (delegate* unmanaged<uint, int>)Get("cuInit", missing);
        DriverGetVersion = (delegate* unmanaged<int*, int>)Get("cuDriverGetVersion", missing);
        DeviceGetCount = (delegate* unmanaged<int*, int>)Get("cuDeviceGetCount", missing);
        DeviceGet = (delegate* unmanaged<int*, int, int>)Get("cuDeviceGet", missing);
        DeviceGetName = (delegate* unmanaged<byte*, int, int, int>)Get("cuDeviceGetName", missing);
        DeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)Get("cuDeviceGetAttribute", missing);
        DeviceTotalMem = (delegate* unmanaged<nuint*, int, int>)Get("cuDeviceTotalMem_v2", missing);
        DevicePrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)Get("cuDevicePrimaryCtxRetain", missing);
        DevicePrimaryCtxRelease = (delegate* unmanaged<int, int>)Get("cuDevicePrimaryCtxRelease_v2", missing);
        CtxSetCurrent = (delegate* unmanaged<nint, int>)Get("cuCtxSetCurrent", missing);
        CtxSynchronize = (delegate* unmanaged<int>)Get("cuCtxSynchronize", missing);
        MemAlloc = (delegate* unmanaged<ulong*, nuint, int>)Get("cuMemAlloc_v2", missing);
        MemFree = (delegate* unmanaged<ulong, int>)Get("cuMemFree_v2", missing);
        MemAllocAsync = (delegate* unmanaged<ulong*, nuint, nint, int>)Get("cuMemAllocAsync", null);
        MemFreeAsync = (delegate* unmanaged<ulong, nint, int>)Get("cuMemFreeAsync", null);
        MemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, nint, int>)Get("cuMemcpyHtoDAsync_v2", missing);
        MemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, nint, int>)Get("cuMemcpyDtoHAsync_v2", missing);
        MemcpyDtoDAsync = (delegate* unmanaged<ulong, ulong, nuint, nint, int>)Get("cuMemcpyDtoDAsync_v2", missing);
        MemsetD32Async = (delegate* unmanaged<ulong, uint, nuint, nint, int>)Get("cuMemsetD32Async", missing);
        StreamCreate = (delegate* unmanaged<nint*, uint, int>)Get("cuStreamCreate", missing);
        StreamSynchronize = (delegate* unmanaged<nint, int>)Get("cuStreamSynchronize", missing);
        StreamDestroy = (delegate* unmanaged<nint, int>)Get("cuStreamDestroy_v2", missing);
        ModuleLoadData = (delegate* unmanaged<nint*, void*, int>)Get("cuModuleLoadData", missing);
        ModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)Get("cuModuleGetFunction", missing);
        ModuleUnload = (delegate* unmanaged<nint, int>)Get("cuModuleUnload", missing);
        LaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)Get("cuLaunchKernel", missing);
        FuncSetAttribute = (delegate* unmanaged<nint, int, int, int>)Get("cuFuncSetAttribute", missing);
        FuncGetAttribute = (delegate* unmanaged<int*, int, nint, int>)Get("cuFuncGetAttribute", missing);
        GetErrorName = (delegate* unmanaged<int, byte**, int>)Get("cuGetErrorName", missing);
        GetErrorString = (delegate* unmanaged<int, byte**, int>)Get("cuGetErrorString", missing);
    }

    private nint Get(string name, List<string>? missing)
    {
        if (NativeLibrary.TryGetExport(library, name, out nint p)) return p;
        missing?.Add(name);
        return 0;
    }

    /// <summary>"CUDA_ERROR_X (description)" for a result code.</summary>
    public string Describe(int result)
    {
        byte* name = null, text = null;
        if (GetErrorName is not null) _ = GetErrorName(result, &name);
        if (GetErrorString is not null) _ = GetErrorString(result, &text);
        return ErrorText(result, name is null ? null : Marshal.PtrToStringUTF8((nint)name), text is null ? null : Marshal.PtrToStringUTF8((nint)text));
    }

    /// <summary>Formats a driver error (pure, so it is testable without a driver).</summary>
    public static string ErrorText(int result, string? name, string? description) =>
        $"{name ?? "CUDA error"} ({result}){(string.IsNullOrEmpty(description) ? "" : ": " + description)}";

    /// <summary>Throw a <see cref="CudaException"/> naming <paramref name="what"/> unless <paramref name="result"/> is success.</summary>
    public void Check(int result, string what)
    {
        if (result != Success) throw new CudaException($"{what} failed: {Describe(result)}");
    }
}
