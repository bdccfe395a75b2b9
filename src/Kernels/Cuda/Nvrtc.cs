using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace UioLlm.Kernels.Cuda;

/// <summary>Registers and spills ptxas reported for one kernel of one compiled source.</summary>
public sealed record KernelResourceUsage(string Source, string Kernel, string Architecture, int Registers, int SpillStoreBytes,
    int SpillLoadBytes, int StackFrameBytes)
{
    public override string ToString() =>
        $"{Source,-18} {Kernel,-34} {Architecture,-6} {Registers,4} regs  spill st {SpillStoreBytes,4} B  ld {SpillLoadBytes,4} B  stack {StackFrameBytes,4} B";
}

/// <summary>The result of compiling one source: the image (cubin, or PTX when the device is newer than NVRTC), the log and the ptxas resource report.</summary>
public sealed record NvrtcResult(string Source, string Architecture, byte[] Image, bool IsCubin, string Log, IReadOnlyList<KernelResourceUsage> Usage)
{
    /// <summary>Lines of the log that are warnings or errors (ptxas "info" lines are not).</summary>
    public IReadOnlyList<string> Diagnostics => Nvrtc.DiagnosticLines(Log);
}

/// <summary>
/// NVRTC, the run-time CUDA C++ compiler, loaded at run time (libnvrtc-builtins first, then libnvrtc) and
/// called through function pointers. Kernels are header-free: only the in-repo common header is supplied.
/// </summary>
public sealed unsafe class Nvrtc
{
    private readonly delegate* unmanaged<int*, int*, int> version;
    private readonly delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> createProgram;
    private readonly delegate* unmanaged<nint, int, byte**, int> compileProgram;
    private readonly delegate* unmanaged<nint, nuint*, int> getLogSize;
    private readonly delegate* unmanaged<nint, byte*, int> getLog;
    private readonly delegate* unmanaged<nint, nuint*, int> getCubinSize;
    private readonly delegate* unmanaged<nint, byte*, int> getCubin;
    private readonly delegate* unmanaged<nint, nuint*, int> getPtxSize;
    private readonly delegate* unmanaged<nint, byte*, int> getPtx;
    private readonly delegate* unmanaged<nint*, int> destroyProgram;
    private readonly delegate* unmanaged<int, byte*> getErrorString;
    private readonly delegate* unmanaged<int*, int> getNumSupportedArchs;
    private readonly delegate* unmanaged<int*, int> getSupportedArchs;

    private Nvrtc(nint lib, string path)
    {
        LibraryPath = path;
        nint Get(string name) => NativeLibrary.TryGetExport(lib, name, out var p) ? p
            : throw new CudaException($"{path} lacks {name}; NVRTC 11.2 or newer is needed");
        version = (delegate* unmanaged<int*, int*, int>)Get("nvrtcVersion");
        createProgram = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)Get("nvrtcCreateProgram");
        compileProgram = (delegate* unmanaged<nint, int, byte**, int>)Get("nvrtcCompileProgram");
        getLogSize = (delegate* unmanaged<nint, nuint*, int>)Get("nvrtcGetProgramLogSize");
        getLog = (delegate* unmanaged<nint, byte*, int>)Get("nvrtcGetProgramLog");
        getCubinSize = (delegate* unmanaged<nint, nuint*, int>)Get("nvrtcGetCUBINSize");
        getCubin = (delegate* unmanaged<nint, byte*, int>)Get("nvrtcGetCUBIN");
        getPtxSize = (delegate* unmanaged<nint, nuint*, int>)Get("nvrtcGetPTXSize");
        getPtx = (delegate* unmanaged<nint, byte*, int>)Get("nvrtcGetPTX");
        destroyProgram = (delegate* unmanaged<nint*, int>)Get("nvrtcDestroyProgram");
        getErrorString = (delegate* unmanaged<int, byte*>)Get("nvrtcGetErrorString");
        getNumSupportedArchs = (delegate* unmanaged<int*, int>)Get("nvrtcGetNumSupportedArchs");
        getSupportedArchs = (delegate* unmanaged<int*, int>)Get("nvrtcGetSupportedArchs");
        int major, minor;
        Check(version(&major, &minor), "nvrtcVersion");
        Version = new Version(major, minor);
        int count;
        Check(getNumSupportedArchs(&count), "nvrtcGetNumSupportedArchs");
        var archs = new int[count];
        fixed (int* a = archs) Check(getSupportedArchs(a), "nvrtcGetSupportedArchs");
        SupportedArchitectures = archs;
    }

    public string LibraryPath { get; }

    public Version Version { get; }

    /// <summary>Real architectures this NVRTC can emit cubins for (e.g. 80 = sm_80).</summary>
    public IReadOnlyList<int> SupportedArchitectures { get; }

    private static readonly Lazy<(Nvrtc? Nvrtc, string? Reason)> shared = new(Load);

    /// <summary>The process-wide NVRTC, or null with the reason it is unusable.</summary>
    public static Nvrtc? TryLoad(out string? reason)
    {
        var (n, why) = shared.Value;
        reason = why;
        return n;
    }

    /// <summary>Folders searched for libnvrtc, after UIOLLM_NVRTC and the loader's default path.</summary>
    public static IEnumerable<string> SearchFolders()
    {
        foreach (string var in new[] { "CUDA_HOME", "CUDA_PATH" })
        {
            string? root = Environment.GetEnvironmentVariable(var);
            if (!string.IsNullOrEmpty(root)) { yield return Path.Combine(root, "lib64"); yield return Path.Combine(root, "lib"); }
        }
        yield return "/usr/local/cuda/lib64";
        yield return "/usr/local/cuda/targets/x86_64-linux/lib";
        yield return "/usr/lib/x86_64-linux-gnu";
        yield return "/usr/lib64";
    }

    private static (Nvrtc?, string?) Load()
    {
        var tried = new List<string>();
        string? explicitPath = Environment.GetEnvironmentVariable("UIOLLM_NVRTC");
        var candidates = new List<string>();
        if (!string.IsNullOrEmpty(explicitPath)) candidates.Add(explicitPath);
        foreach (string dir in SearchFolders())
        {
            if (!Directory.Exists(dir)) continue;
            candidates.AddRange(Directory.EnumerateFiles(dir, "libnvrtc.so*")
                .Where(f => !Path.GetFileName(f).Contains("alt", StringComparison.Ordinal))
                .OrderByDescending(f => VersionKey(Path.GetFileName(f))));
        }
        candidates.AddRange(["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"]);
        foreach (string candidate in candidates.Distinct())
        {
            tried.Add(candidate);
            LoadBuiltinsBeside(candidate);
            if (!NativeLibrary.TryLoad(candidate, out nint lib)) continue;
            try
            {
                return (new Nvrtc(lib, candidate), null);
            }
            catch (CudaException e)
            {
                return (null, e.Message);
            }
        }
        return (null, $"no NVRTC: could not load libnvrtc (tried {string.Join(", ", tried.Take(6))}{(tried.Count > 6 ? ", ..." : "")}); " +
            "install the CUDA toolkit's NVRTC (Debian: libnvrtc11.2 from non-free) or set UIOLLM_NVRTC");
    }

    /// <summary>NVRTC dlopens libnvrtc-builtins by soname; loading the one beside it first makes that work outside the loader path.</summary>
    private static void LoadBuiltinsBeside(string nvrtcPath)
    {
        string? dir = Path.GetDirectoryName(nvrtcPath);
        if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir)) return;
        foreach (string f in Directory.EnumerateFiles(dir, "libnvrtc-builtins.so*").OrderByDescending(f => VersionKey(Path.GetFileName(f))))
            if (NativeLibrary.TryLoad(f, out _)) return;
    }

    /// <summary>Ordinal sort key from the numbers after ".so" (libnvrtc.so.12.4.127 -> 12.4.127); more specific versions sort higher, the bare .so lowest.</summary>
    internal static string VersionKey(string fileName)
    {
        int at = fileName.IndexOf(".so", StringComparison.Ordinal);
        string tail = at < 0 ? "" : fileName[(at + 3)..].TrimStart('.');
        var parts = tail.Split('.', StringSplitOptions.RemoveEmptyEntries);
        return string.Concat(parts.Select(p => int.TryParse(p, out int v) ? v.ToString("D6") : "000000").Concat(["!"]));
    }

    private void Check(int result, string what)
    {
        if (result != 0)
            throw new CudaException($"{what} failed: NVRTC error {result} ({Marshal.PtrToStringUTF8((nint)getErrorString(result))})");
    }

    /// <summary>
    /// Compile <paramref name="source"/> for compute capability <paramref name="arch"/> (e.g. 80). When NVRTC cannot emit a cubin for
    /// that architecture (a device newer than the compiler), PTX for the newest supported one is returned for the driver to JIT.
    /// Throws <see cref="CudaException"/> with the compiler log on an error.
    /// </summary>
    public NvrtcResult Compile(string sourceName, string source, IReadOnlyDictionary<string, string> headers, int arch, IEnumerable<string> extraOptions)
    {
        bool cubin = SupportedArchitectures.Contains(arch);
        int target = cubin ? arch : SupportedArchitectures.Where(a => a <= arch).DefaultIfEmpty(SupportedArchitectures.Max()).Max();
        var options = new List<string> { cubin ? $"--gpu-architecture=sm_{arch}" : $"--gpu-architecture=compute_{target}", "--std=c++17" };
        if (cubin) options.Add("--ptxas-options=-v");
        options.AddRange(extraOptions);

        var strings = new List<nint>();
        nint Utf8(string s)
        {
            nint p = Marshal.StringToCoTaskMemUTF8(s);
            strings.Add(p);
            return p;
        }
        nint prog = 0;
        try
        {
            var headerNames = headers.Keys.ToArray();
            byte** hsrc = stackalloc byte*[Math.Max(1, headerNames.Length)];
            byte** hname = stackalloc byte*[Math.Max(1, headerNames.Length)];
            for (int i = 0; i < headerNames.Length; i++)
            {
                hsrc[i] = (byte*)Utf8(headers[headerNames[i]]);
                hname[i] = (byte*)Utf8(headerNames[i]);
            }
            Check(createProgram(&prog, (byte*)Utf8(source), (byte*)Utf8(sourceName), headerNames.Length, hsrc, hname), $"nvrtcCreateProgram({sourceName})");
            byte** opts = stackalloc byte*[options.Count];
            for (int i = 0; i < options.Count; i++) opts[i] = (byte*)Utf8(options[i]);
            int rc = compileProgram(prog, options.Count, opts);
            nuint logSize;
            Check(getLogSize(prog, &logSize), "nvrtcGetProgramLogSize");
            var logBytes = new byte[(int)logSize];
            fixed (byte* l = logBytes) Check(getLog(prog, l), "nvrtcGetProgramLog");
            string log = Encoding.UTF8.GetString(logBytes).TrimEnd('\0');
            if (rc != 0)
                throw new CudaException($"NVRTC could not compile {sourceName} for sm_{arch} ({string.Join(' ', options)}): " +
                    $"{Marshal.PtrToStringUTF8((nint)getErrorString(rc))}\n{log}");
            nuint size;
            byte[] image;
            if (cubin)
            {
                Check(getCubinSize(prog, &size), "nvrtcGetCUBINSize");
                image = new byte[(int)size];
                fixed (byte* b = image) Check(getCubin(prog, b), "nvrtcGetCUBIN");
            }
            else
            {
                Check(getPtxSize(prog, &size), "nvrtcGetPTXSize");
                image = new byte[(int)size];   // includes the terminating NUL cuModuleLoadData needs
                fixed (byte* b = image) Check(getPtx(prog, b), "nvrtcGetPTX");
            }
            string archName = cubin ? $"sm_{arch}" : $"compute_{target}";
            return new NvrtcResult(sourceName, archName, image, cubin, log, ParseUsage(sourceName, archName, log));
        }
        finally
        {
            if (prog != 0) _ = destroyProgram(&prog);
            foreach (nint p in strings) Marshal.FreeCoTaskMem(p);
        }
    }

    private static readonly Regex EntryLine = new(@"Compiling entry function '([^']+)' for '([^']+)'", RegexOptions.Compiled);
    private static readonly Regex FrameLine = new(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", RegexOptions.Compiled);
    private static readonly Regex RegsLine = new(@"Used (\d+) registers", RegexOptions.Compiled);

    /// <summary>Per-kernel registers and spills from a ptxas -v log (entry functions only).</summary>
    public static IReadOnlyList<KernelResourceUsage> ParseUsage(string source, string arch, string log)
    {
        var result = new List<KernelResourceUsage>();
        string? kernel = null;
        int frame = 0, stores = 0, loads = 0;
        foreach (string line in log.Split('\n'))
        {
            var e = EntryLine.Match(line);
            if (e.Success) { kernel = e.Groups[1].Value; frame = stores = loads = 0; continue; }
            if (kernel is null) continue;
            var f = FrameLine.Match(line);
            if (f.Success)
            {
                frame = int.Parse(f.Groups[1].Value);
                stores = int.Parse(f.Groups[2].Value);
                loads = int.Parse(f.Groups[3].Value);
                continue;
            }
            var r = RegsLine.Match(line);
            if (r.Success)
            {
                result.Add(new KernelResourceUsage(source, kernel, arch, int.Parse(r.Groups[1].Value), stores, loads, frame));
                kernel = null;
            }
        }
        return result;
    }

    /// <summary>Log lines that are warnings or errors.</summary>
    public static IReadOnlyList<string> DiagnosticLines(string log) =>
        log.Split('\n').Select(l => l.TrimEnd()).Where(l => l.Length > 0 && !l.StartsWith("ptxas info", StringComparison.Ordinal)
            && !l.StartsWith("ptxas         .", StringComparison.Ordinal)
            && (l.Contains("warning", StringComparison.OrdinalIgnoreCase) || l.Contains("error", StringComparison.OrdinalIgnoreCase))).ToList();
}
