using UioLlm.Kernels;

namespace UioLlm.Tests.Support;

/// <summary>
/// The accelerator the kernel, model, UIO and estimator tests run on: CPU by default; UIOLLM_TEST_BACKEND=gpu runs
/// them on the ILGPU backend (CUDA when usable, else ILGPU's CPU accelerator), =cuda or =ilgpu-cpu names one.
/// </summary>
public static class TestBackend
{
    private static readonly Lazy<Accelerator> shared = new(Create);

    /// <summary>One accelerator shared by every test (kernels are stateless; tensors are per test).</summary>
    public static Accelerator Shared => shared.Value;

    public static Accelerator Create()
    {
        string? name = Environment.GetEnvironmentVariable("UIOLLM_TEST_BACKEND");
        return name?.ToLowerInvariant() switch
        {
            null or "" or "cpu" => Accelerator.Create(AcceleratorKind.Cpu),
            "cuda" => Accelerator.Create(AcceleratorKind.Cuda),
            "ilgpu-cpu" => Accelerator.Create(AcceleratorKind.IlgpuCpu),
            // The ILGPU backend: on CUDA when a usable NVIDIA GPU is present, else on ILGPU's CPU accelerator.
            "gpu" => UioLlm.Kernels.Gpu.IlgpuAccelerator.CudaUnavailableReason() is null
                ? Accelerator.Create(AcceleratorKind.Cuda)
                : Accelerator.Create(AcceleratorKind.IlgpuCpu),
            _ => throw new InvalidOperationException($"UIOLLM_TEST_BACKEND='{name}': expected cpu, gpu, cuda or ilgpu-cpu"),
        };
    }
}

/// <summary>Where the shared third-party test data lives (../shared/data, or UIOLLM_DATA).</summary>
public static class TestData
{
    public static string? Root
    {
        get
        {
            string? env = Environment.GetEnvironmentVariable("UIOLLM_DATA");
            if (!string.IsNullOrEmpty(env)) return Directory.Exists(env) ? env : null;
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "..", "shared", "data");
                if (Directory.Exists(candidate) && System.IO.File.Exists(Path.Combine(candidate, "README.md")))
                    return Path.GetFullPath(candidate);
            }
            return null;
        }
    }

    public const string MissingReason = "shared test data not found: set UIOLLM_DATA or place it at ../shared/data";

    /// <summary>The full path of a file under the data root (tests using it are [DataFact]s).</summary>
    public static string File(params string[] parts)
    {
        string root = Root ?? throw new InvalidOperationException(MissingReason);
        string path = System.IO.Path.Combine([root, .. parts]);
        if (!System.IO.File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"test data file missing: {path}", path);
        return path;
    }
}
