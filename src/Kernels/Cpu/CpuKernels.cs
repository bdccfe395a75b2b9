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
        Parallel = new ParallelOptions { MaxDegreeOfParallelism = threads };
    }

    public int Threads { get; }

    internal ParallelOptions Parallel { get; }
}
