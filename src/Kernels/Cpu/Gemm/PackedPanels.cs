using System.Runtime.InteropServices;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>
/// A whole op(B) [K, N] packed once in the order the blocked driver streams it: for each K slice of the
/// driver's slice depth, every NR-wide column panel in turn (kc x NR floats each, the last one zero-padded).
/// A column block [jc, jc+nc) of slice pc is then exactly the consecutive panels the driver would have packed
/// itself, so frozen weights skip packing altogether. Native, 64-byte aligned, freed by the finalizer.
/// </summary>
internal sealed unsafe class PackedPanels
{
    private PackedPanels(bool transB, int k, int n, GemmKernel kernel)
    {
        TransB = transB;
        K = k;
        N = n;
        Kernel = kernel;
        KcStep = GemmDriver.SliceDepth(k, kernel);
        PaddedN = GemmDriver.RoundUp(n, kernel.NR);
        nuint bytes = (nuint)((long)k * PaddedN * sizeof(float));
        Data = (float*)NativeMemory.AlignedAlloc(Math.Max(bytes, 64), 64);
    }

    ~PackedPanels() => NativeMemory.AlignedFree(Data);

    public bool TransB { get; }

    public int K { get; }

    public int N { get; }

    public GemmKernel Kernel { get; }

    /// <summary>Depth of every K slice but the last (the driver's own slicing of K).</summary>
    public int KcStep { get; }

    /// <summary>N rounded up to whole panels.</summary>
    public int PaddedN { get; }

    public float* Data { get; }

    /// <summary>The packed panels of slice <paramref name="pc"/> (depth <paramref name="kc"/>) from column <paramref name="jc"/> (a panel boundary) on.</summary>
    public float* Block(int pc, int kc, int jc) => Data + (nint)pc * PaddedN + (nint)(jc / Kernel.NR) * kc * Kernel.NR;

    /// <summary>
    /// The panels of <paramref name="frozen"/> as the B operand of <paramref name="g"/> (op(B) = the tensor,
    /// transposed when g.TransB), built on first use and kept with the tensor until it is unfrozen or disposed.
    /// </summary>
    public static PackedPanels For(Tensor frozen, in GemmProblem g, GemmKernel kernel)
    {
        var cache = frozen.KernelCache as Cache;
        if (cache is null)
        {
            lock (frozen)
            {
                cache = frozen.KernelCache as Cache;
                if (cache is null) frozen.KernelCache = cache = new Cache();
            }
        }
        lock (cache)
        {
            foreach (var p in cache.Entries)
                if (p.TransB == g.TransB && p.Kernel == kernel && p.K == g.K && p.N == g.N) return p;
            var built = Build(g, kernel);
            cache.Entries.Add(built);
            return built;
        }
    }

    private static PackedPanels Build(in GemmProblem g, GemmKernel kernel)
    {
        var panels = new PackedPanels(g.TransB, g.K, g.N, kernel);
        for (int pc = 0; pc < g.K; pc += panels.KcStep)
        {
            int kc = Math.Min(panels.KcStep, g.K - pc);
            GemmDriver.PackBBlock(g, pc, kc, 0, g.N, kernel.NR, panels.Block(pc, kc, 0));
        }
        return panels;
    }

    /// <summary>Every packed form of one frozen tensor (one per orientation and kernel in use).</summary>
    private sealed class Cache
    {
        public readonly List<PackedPanels> Entries = new(2);
    }
}
