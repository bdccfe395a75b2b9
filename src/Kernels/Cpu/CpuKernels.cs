namespace UioLlm.Kernels.Cpu;

/// <summary>
/// The CPU implementation of <see cref="IKernels"/>: one file per op family (forward and backward side by
/// side), SIMD through System.Runtime.Intrinsics, parallel over independent tiles.
/// </summary>
public sealed partial class CpuKernels : IKernels
{
    public CpuKernels(int threads)
    {
        if (threads <= 0) throw new ArgumentOutOfRangeException(nameof(threads), threads, "expected a positive thread count");
        Threads = threads;
    }

    public int Threads { get; }

    /// <summary>body(i) for i in [0, count) on up to <see cref="Threads"/> threads of the shared worker pool.</summary>
    internal void ParallelFor(int count, Action<int> body) => UioLlm.Kernels.Cpu.Gemm.WorkerPool.For(count, Threads, body);
}
