using System.Reflection;
using System.Security.Cryptography;
using System.Text;

namespace UioLlm.Kernels.Cuda;

/// <summary>
/// The CUDA C++ sources embedded in this assembly (src/Kernels/Cuda/Kernels/*.cu) and the one common header
/// they include. Also the CLI-free entry point that compiles them all and reports registers and spills.
/// </summary>
public static class CudaSources
{
    /// <summary>The name kernels #include (passed to NVRTC as a named header; no CUDA headers are used).</summary>
    public const string CommonHeader = "uio_common.cuh";

    private const string Prefix = "UioLlm.Kernels.Cuda.";

    private static readonly Lazy<IReadOnlyDictionary<string, string>> all = new(LoadAll);

    /// <summary>Every .cu source, by file name.</summary>
    public static IReadOnlyDictionary<string, string> Sources => all.Value.Where(kv => kv.Key.EndsWith(".cu", StringComparison.Ordinal))
        .ToDictionary(kv => kv.Key, kv => kv.Value);

    /// <summary>The headers handed to NVRTC (just the common one).</summary>
    public static IReadOnlyDictionary<string, string> Headers => new Dictionary<string, string> { [CommonHeader] = all.Value[CommonHeader] };

    /// <summary>Options every source is compiled with (besides the architecture). fp32 exact: no fast-math.</summary>
    public static readonly string[] Options = ["-DUIO_NVRTC=1"];

    public static string Get(string name) =>
        all.Value.TryGetValue(name, out var s) ? s : throw new ArgumentException($"no embedded CUDA source named '{name}'", nameof(name));

    private static IReadOnlyDictionary<string, string> LoadAll()
    {
        var asm = typeof(CudaSources).Assembly;
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string res in asm.GetManifestResourceNames())
        {
            if (!res.StartsWith(Prefix, StringComparison.Ordinal)) continue;
            using var stream = asm.GetManifestResourceStream(res)!;
            using var reader = new StreamReader(stream, Encoding.UTF8);
            result[res[Prefix.Length..]] = reader.ReadToEnd();
        }
        if (!result.ContainsKey(CommonHeader))
            throw new InvalidOperationException($"the embedded CUDA header {CommonHeader} is missing from {asm.GetName().Name}");
        return result;
    }

    /// <summary>A stable key for the disk cache: source, header, architecture, options and NVRTC version.</summary>
    public static string CacheKey(string name, int arch, Version nvrtcVersion)
    {
        var text = new StringBuilder().Append(name).Append('\n').Append(Get(name)).Append('\n').Append(Headers[CommonHeader])
            .Append('\n').Append(arch).Append('\n').AppendJoin(' ', Options).Append('\n').Append(nvrtcVersion).ToString();
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..32].ToLowerInvariant();
    }

    /// <summary>
    /// Compile every embedded source for compute capability <paramref name="arch"/> (80 = sm_80) with NVRTC and return
    /// each result (image, log, per-kernel registers and spills). Needs NVRTC only, no GPU. Throws
    /// <see cref="CudaException"/> when NVRTC is missing or a source does not compile.
    /// </summary>
    public static IReadOnlyList<NvrtcResult> CompileAll(int arch)
    {
        var nvrtc = Nvrtc.TryLoad(out string? reason) ?? throw new CudaException(reason ?? "NVRTC is not available");
        return Sources.OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => nvrtc.Compile(kv.Key, kv.Value, Headers, arch, Options)).ToList();
    }

    /// <summary>One line per kernel: registers, spill stores and loads, stack frame (for the runner and the bench).</summary>
    public static IEnumerable<string> ResourceReport(IEnumerable<NvrtcResult> results) =>
        results.SelectMany(r => r.Usage).Select(u => u.ToString());

    internal static Assembly Assembly => typeof(CudaSources).Assembly;
}
