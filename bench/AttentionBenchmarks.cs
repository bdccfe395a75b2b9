using System.Diagnostics;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using UioLlm.Kernels;

namespace UioLlm.Bench;

/// <summary>One attention benchmark shape: B=1, Tq queries over Tk keys, Hq/Hkv heads of size D, a mask.</summary>
public sealed record AttentionBenchCase(string Name, int Tq, int Tk, int Hq, int Hkv, int D, AttentionMask Mask)
{
    /// <summary>Query-key pairs the mask leaves visible, summed over query heads (the only pairs counted as work).</summary>
    public long VisiblePairs()
    {
        var bounds = new int[2 * AttentionMask.MaxIntervals];
        long pairs = 0;
        for (int h = 0; h < Hq; h++)
            for (int i = 0; i < Tq; i++)
            {
                int n = Mask.VisibleIntervals(h, Hq, i, Tq, Tk, bounds);
                for (int t = 0; t < n; t++) pairs += bounds[2 * t + 1] - bounds[2 * t];
            }
        return pairs;
    }

    /// <summary>Forward: QK^T and PV, 2 * 2D flops per visible pair.</summary>
    public double ForwardFlops => 4.0 * D * VisiblePairs();

    /// <summary>Backward: S recompute, dP, dV, dK, dQ, 5 * 2D flops per visible pair.</summary>
    public double BackwardFlops => 10.0 * D * VisiblePairs();

    public override string ToString() => Name;
}

/// <summary>Tensors for one case, filled with small random values.</summary>
public sealed class AttentionBenchData : IDisposable
{
    public AttentionBenchData(Accelerator acc, AttentionBenchCase c)
    {
        Case = c;
        var rng = new Random(1);
        Tensor Random(int[] shape, string name)
        {
            var t = acc.Allocate(shape, name);
            var span = t.Span;
            for (int i = 0; i < span.Length; i++) span[i] = (float)(rng.NextDouble() * 2 - 1);
            return t;
        }
        Q = Random([c.Tq, c.Hq, c.D], "q");
        K = Random([c.Tk, c.Hkv, c.D], "k");
        V = Random([c.Tk, c.Hkv, c.D], "v");
        DO = Random([c.Tq, c.Hq, c.D], "dO");
        O = acc.Allocate([c.Tq, c.Hq, c.D], "o");
        Lse = acc.Allocate([c.Hq, c.Tq], "lse");
        DQ = acc.Allocate([c.Tq, c.Hq, c.D], "dq");
        DK = acc.Allocate([c.Tk, c.Hkv, c.D], "dk");
        DV = acc.Allocate([c.Tk, c.Hkv, c.D], "dv");
        Kernels = acc.Kernels;
        Forward();
    }

    public AttentionBenchCase Case { get; }
    public IKernels Kernels { get; }
    public Tensor Q, K, V, O, Lse, DO, DQ, DK, DV;

    public void Forward() => Kernels.Attention(Q, K, V, O, Lse, Case.Mask);

    public void Backward() => Kernels.AttentionBackward(Q, K, V, O, DO, Lse, Case.Mask, DQ, DK, DV);

    public void Dispose()
    {
        foreach (var t in new[] { Q, K, V, O, Lse, DO, DQ, DK, DV }) t.Dispose();
    }
}

public static class AttentionBenchCases
{
    /// <summary>Causal self-attention over n keys.</summary>
    public static AttentionBenchCase Causal(int n, int hq, int hkv, int d) =>
        new($"causal T={n} Hq={hq} Hkv={hkv} D={d}", n, n, hq, hkv, d, AttentionMask.CausalMask());

    /// <summary>UIO decoder: a chunk of causal tokens after a memory prefix every query sees.</summary>
    public static AttentionBenchCase UioDecoder(int memory, int chunk, int hq, int hkv, int d) =>
        new($"uio-decoder mem={memory}+T={chunk} Hq={hq} Hkv={hkv} D={d}", chunk, memory + chunk, hq, hkv, d, AttentionMask.CausalMask(memory));

    public static IEnumerable<AttentionBenchCase> All()
    {
        foreach (int n in new[] { 1024, 2048, 4096, 8192 }) yield return Causal(n, 8, 8, 64);
        foreach (int n in new[] { 1024, 4096 }) yield return Causal(n, 16, 4, 128);
        yield return UioDecoder(1024, 2048, 16, 4, 128);
    }
}

/// <summary>BenchmarkDotNet: attention forward and backward (dq, dk, dv) over causal 1K..8K keys and the UIO decoder case.</summary>
[MemoryDiagnoser]
public class AttentionBenchmarks
{
    private Accelerator? acc;
    private AttentionBenchData? data;

    public static IEnumerable<AttentionBenchCase> Cases => AttentionBenchCases.All();

    [ParamsSource(nameof(Cases))]
    public AttentionBenchCase Case { get; set; } = AttentionBenchCases.Causal(1024, 8, 8, 64);

    [GlobalSetup]
    public void Setup()
    {
        acc = Accelerator.Create(AcceleratorKind.Cpu);
        data = new AttentionBenchData(acc, Case);
    }

    [Benchmark]
    public void Forward() => data!.Forward();

    [Benchmark]
    public void Backward() => data!.Backward();

    [GlobalCleanup]
    public void Cleanup()
    {
        data?.Dispose();
        acc?.Dispose();
    }
}

/// <summary>
/// A quick Stopwatch runner: attention forward and backward GFLOP/s at 1 and 2 threads, next to a matrix
/// multiply rate (our MatMul when available, OpenBLAS sgemm when its library loads) for the ratio.
/// </summary>
public static class AttentionSideBySide
{
    public static void Run(TextWriter output, bool quick, IReadOnlyList<int>? threadCounts = null)
    {
        threadCounts ??= [1, 2];
        var cases = quick
            ? new[] { AttentionBenchCases.Causal(1024, 8, 8, 64), AttentionBenchCases.Causal(4096, 8, 8, 64), AttentionBenchCases.UioDecoder(1024, 1024, 8, 2, 128) }
            : AttentionBenchCases.All().ToArray();
        output.WriteLine("Attention GFLOP/s, counting only visible (unmasked) query-key pairs: forward 4*D flops per pair, backward 10*D flops per pair.");
        output.WriteLine($"{"case",-44} {"threads",7} {"fwd ms",9} {"fwd GF/s",9} {"bwd ms",9} {"bwd GF/s",9} {"fwd/mm",7} {"bwd/mm",7}");
        foreach (int threads in threadCounts)
        {
            using var acc = Accelerator.Create(AcceleratorKind.Cpu, threads);
            double matmul = MatMulRate(acc, threads, quick, out string matmulSource);
            output.WriteLine($"-- {threads} thread(s): matmul reference {matmul:F1} GFLOP/s ({matmulSource})");
            foreach (var c in cases)
            {
                using var data = new AttentionBenchData(acc, c);
                double budget = quick ? 0.3 : 2.0;
                double fwd = BestSeconds(data.Forward, budget), bwd = BestSeconds(data.Backward, budget);
                double fwdRate = c.ForwardFlops / fwd / 1e9, bwdRate = c.BackwardFlops / bwd / 1e9;
                string Ratio(double r) => matmul > 0 ? $"{r / matmul:P0}" : "n/a";
                output.WriteLine($"{c.Name,-44} {threads,7} {fwd * 1e3,9:F1} {fwdRate,9:F1} {bwd * 1e3,9:F1} {bwdRate,9:F1} {Ratio(fwdRate),7} {Ratio(bwdRate),7}");
            }
        }
    }

    /// <summary>Best wall time of one call, repeating until the budget is spent (at least three times, after a warm-up).</summary>
    public static double BestSeconds(Action action, double budgetSeconds)
    {
        action();
        double best = double.MaxValue, spent = 0;
        for (int rep = 0; rep < 3 || spent < budgetSeconds; rep++)
        {
            long start = Stopwatch.GetTimestamp();
            action();
            double s = Stopwatch.GetElapsedTime(start).TotalSeconds;
            best = Math.Min(best, s);
            spent += s;
        }
        return best;
    }

    /// <summary>GFLOP/s of a 512 x 4096 x 4096 product: our MatMul if it runs, else OpenBLAS sgemm, else 0.</summary>
    public static double MatMulRate(Accelerator acc, int threads, bool quick, out string source)
    {
        const int m = 512, n = 4096, k = 4096;
        double flops = 2.0 * m * n * k;
        using var a = acc.Allocate([m, k], "a");
        using var b = acc.Allocate([k, n], "b");
        using var c = acc.Allocate([m, n], "c");
        a.Span.Fill(0.5f);
        b.Span.Fill(0.25f);
        try
        {
            double s = BestSeconds(() => acc.Kernels.MatMul(a, b, c), quick ? 0.5 : 1.5);
            source = "UioLlm MatMul 512x4096x4096";
            return flops / s / 1e9;
        }
        catch (NotSupportedException)
        {
        }
        if (OpenBlas.TryLoad(threads))
        {
            double s = BestSeconds(() => OpenBlas.Sgemm(a, b, c, m, n, k), quick ? 0.5 : 1.5);
            source = $"OpenBLAS sgemm 512x4096x4096, {threads} thread(s)";
            return flops / s / 1e9;
        }
        source = "no matmul available";
        return 0;
    }

    /// <summary>cblas_sgemm from the system OpenBLAS, when present (a stand-in reference rate only).</summary>
    private static unsafe class OpenBlas
    {
        private static delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> sgemm;
        private static delegate* unmanaged<int, void> setThreads;

        public static bool TryLoad(int threads)
        {
            if (sgemm == null)
            {
                if (!NativeLibrary.TryLoad("libopenblas.so.0", out var lib) && !NativeLibrary.TryLoad("libopenblas", out lib)) return false;
                if (!NativeLibrary.TryGetExport(lib, "cblas_sgemm", out var f)) return false;
                sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)f;
                if (NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out var t))
                    setThreads = (delegate* unmanaged<int, void>)t;
            }
            if (setThreads != null) setThreads(threads);
            return true;
        }

        public static void Sgemm(Tensor a, Tensor b, Tensor c, int m, int n, int k)
        {
            const int rowMajor = 101, noTrans = 111;
            sgemm(rowMajor, noTrans, noTrans, m, n, k, 1f, a.Pointer, k, b.Pointer, n, 0f, c.Pointer, n);
        }
    }
}
