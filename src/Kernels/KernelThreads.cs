namespace UioLlm.Kernels;

/// <summary>How the CPU kernels share the cores with the caller's own threads.</summary>
public static class KernelThreads
{
    /// <summary>
    /// Until the returned scope is disposed, every CPU kernel called on this thread runs on this thread alone instead
    /// of spreading over the shared worker pool. For callers that already run one independent job per core (say,
    /// one training document per worker): there the pool's helpers would only contend for the same cores. Results are
    /// the same either way: a kernel's split into parts does not depend on how many threads run them. Other
    /// accelerators ignore it.
    /// </summary>
    public static IDisposable ThisThreadOnly() => Cpu.Gemm.WorkerPool.Inline();
}
