using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace UioLlm.Bench;

/// <summary>
/// OpenBLAS loaded at run time (bench only): cblas_sgemm, thread count and core name. OPENBLAS_CORETYPE is
/// read by the library when it loads, and .NET's Environment.SetEnvironmentVariable does not reach the
/// native environment on Linux, so the variable is set through libc setenv before the library is loaded.
/// OPENBLAS_THREAD_TIMEOUT is lowered the same way (unless given): by default idle OpenBLAS workers spin for
/// about 2^28 cycles after every call, and in this interleaved comparison they would take a core away from
/// our own threads during our timed runs.
/// </summary>
internal static unsafe class OpenBlas
{
    private const int RowMajor = 101, NoTrans = 111, Trans = 112;

    private static delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> sgemm;
    private static delegate* unmanaged<int, void> setNumThreads;
    private static delegate* unmanaged<byte*> getCoreName;

    public static bool Loaded { get; private set; }

    /// <summary>The OPENBLAS_CORETYPE this process asked for (or found already set).</summary>
    public static string? CoreTypeRequested { get; private set; }

    public static string CoreName => Loaded && getCoreName != null ? Marshal.PtrToStringAnsi((nint)getCoreName()) ?? "?" : "-";

    [DllImport("libc", EntryPoint = "setenv", CharSet = CharSet.Ansi)]
    private static extern int SetEnv(string name, string value, int overwrite);

    /// <summary>Load libopenblas; on failure <paramref name="error"/> says how to install it.</summary>
    public static bool TryLoad(out string error)
    {
        error = "";
        if (Loaded) return true;
        // Respect a core type given by the user; otherwise pick the best kernel family for this CPU.
        string? given = Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE");
        CoreTypeRequested = !string.IsNullOrEmpty(given) ? given : Avx512F.IsSupported ? "SkylakeX" : Avx2.IsSupported ? "Haswell" : null;
        if (OperatingSystem.IsLinux() && CoreTypeRequested is not null)
        {
            try { SetEnv("OPENBLAS_CORETYPE", CoreTypeRequested, 1); }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        }
        if (OperatingSystem.IsLinux() && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OPENBLAS_THREAD_TIMEOUT")))
        {
            // 2^4 cycles: the minimum OpenBLAS accepts; its workers then go to sleep almost at once.
            try { SetEnv("OPENBLAS_THREAD_TIMEOUT", "4", 1); }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        }
        foreach (string name in new[] { "libopenblas.so.0", "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "libopenblas.so", "libopenblas" })
        {
            if (!NativeLibrary.TryLoad(name, out nint handle)) continue;
            if (!NativeLibrary.TryGetExport(handle, "cblas_sgemm", out nint f)) continue;
            sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)f;
            if (NativeLibrary.TryGetExport(handle, "openblas_set_num_threads", out nint t)) setNumThreads = (delegate* unmanaged<int, void>)t;
            if (NativeLibrary.TryGetExport(handle, "openblas_get_corename", out nint c)) getCoreName = (delegate* unmanaged<byte*>)c;
            Loaded = true;
            return true;
        }
        error = "OpenBLAS not found (libopenblas.so.0): install it with `apt-get install libopenblas0-pthread` to compare; showing our numbers only.";
        return false;
    }

    public static void SetThreads(int threads)
    {
        if (setNumThreads != null) setNumThreads(threads);
    }

    /// <summary>Row-major C = alpha op(A) op(B) + beta C.</summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc) =>
        sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
