using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;

namespace UioLlm.Bench;

/// <summary>
/// A quick Stopwatch comparison of our MatMul with OpenBLAS cblas_sgemm on the same shapes, in the same
/// process, on the same buffers: warm-up, then alternating timed runs of the two (so machine noise hits both
/// alike), median per side. Prints GFLOP/s, the ratio and the OpenBLAS core in use.
/// </summary>
internal static class BlasSideBySide
{
    private sealed record Shape(string Name, int M, int N, int K);

    public static int Run(bool quick, IReadOnlyList<int>? threadCounts = null, IReadOnlyList<string>? onlySizes = null)
    {
        bool blas = OpenBlas.TryLoad(out string error);
        if (!blas) Console.WriteLine(error);
        else Console.WriteLine($"OpenBLAS core: {OpenBlas.CoreName} (OPENBLAS_CORETYPE={OpenBlas.CoreTypeRequested ?? "unset"})");
        Console.WriteLine($"Ours: {CpuAccelerator.SimdDescription}; {Environment.ProcessorCount} logical cores; quick={quick}");

        // 512 tokens through square layers, the vocabulary projection and one decode step (M = 1).
        var vocab = new Shape("vocab 512x1024->32000", 512, 32000, 1024);
        var decode = new Shape("decode 1x4096->4096", 1, 4096, 4096);
        var shapes = new List<Shape>();
        if (onlySizes is not null)
        {
            foreach (string s in onlySizes)
                shapes.Add(s == "vocab" ? vocab : s == "decode" ? decode : new Shape($"512x{s}->{s}", 512, int.Parse(s), int.Parse(s)));
        }
        else
        {
            foreach (int s in quick ? [512, 1024, 2048] : new[] { 512, 1024, 2048, 4096 }) shapes.Add(new Shape($"512x{s}->{s}", 512, s, s));
            if (!quick) shapes.Add(vocab);
            shapes.Add(decode);
        }

        threadCounts ??= [1, 2];
        Console.WriteLine();
        Console.WriteLine($"{"shape (M x K -> N)",-24} {"op",-6} {"thr",3} {"ours GF/s",10} {"BLAS GF/s",10} {"ratio",6}  {"max rel diff",12}");
        var ratios = new List<double>();
        foreach (int threads in threadCounts)
        {
            using var acc = new CpuAccelerator(threads);
            if (blas) OpenBlas.SetThreads(threads);
            foreach (var shape in shapes)
                foreach (var (ta, tb) in new[] { (false, true), (false, false), (true, false), (true, true) })
                {
                    var (ours, theirs, diff) = Measure(acc, shape, ta, tb, quick, blas);
                    string op = $"{(ta ? "T" : "N")}{(tb ? "T" : "N")}";
                    string blasText = blas ? $"{theirs,10:F1}" : $"{"-",10}";
                    string ratioText = blas ? $"{ours / theirs,6:F2}" : $"{"-",6}";
                    if (blas) ratios.Add(ours / theirs);
                    Console.WriteLine($"{shape.Name,-24} {op,-6} {threads,3} {ours,10:F1} {blasText} {ratioText}  {(blas ? diff.ToString("E1") : "-"),12}");
                }
        }
        if (ratios.Count > 0)
            Console.WriteLine($"\nratio ours/OpenBLAS: min {ratios.Min():F2}, median {Median(ratios):F2}, max {ratios.Max():F2}");
        return 0;
    }

    /// <summary>GFLOP/s of ours and OpenBLAS (medians), and the largest relative difference of their results.</summary>
    private static unsafe (double Ours, double Blas, double Diff) Measure(Accelerator acc, Shape s, bool transA, bool transB, bool quick, bool blas)
    {
        var rng = new Random(1);
        using var a = Filled(acc, rng, transA ? [s.K, s.M] : [s.M, s.K]);
        using var b = Filled(acc, rng, transB ? [s.N, s.K] : [s.K, s.N]);
        using var c = acc.Allocate(s.M, s.N);
        using var cBlas = acc.Allocate(s.M, s.N);
        var kernels = acc.Kernels;
        void Ours() => kernels.MatMul(a, b, c, transA, transB);
        void Blas() => OpenBlas.Sgemm(transA, transB, s.M, s.N, s.K, 1f, a.Pointer, a.Dim(1), b.Pointer, b.Dim(1), 0f, cBlas.Pointer, s.N);

        double flops = 2.0 * s.M * s.N * s.K;
        // Enough repetitions for ~0.25 s (0.1 s quick) per side, at least 3, after one warm-up each.
        Ours();
        if (blas) Blas();
        var t0 = Stopwatch.StartNew();
        Ours();
        double once = Math.Max(t0.Elapsed.TotalSeconds, 1e-6);
        int reps = Math.Clamp((int)((quick ? 0.1 : 0.25) / once), 3, 200);
        var ours = new List<double>(reps);
        var theirs = new List<double>(reps);
        for (int r = 0; r < reps; r++)
        {
            ours.Add(Time(Ours));
            if (blas) theirs.Add(Time(Blas));
        }
        double diff = 0;
        if (blas)
        {
            var x = c.Span;
            var y = cBlas.Span;
            double scale = 0;
            for (int i = 0; i < y.Length; i++) scale = Math.Max(scale, Math.Abs(y[i]));
            for (int i = 0; i < x.Length; i++) diff = Math.Max(diff, Math.Abs(x[i] - y[i]) / Math.Max(scale, 1e-30));
        }
        return (flops / Median(ours) / 1e9, blas ? flops / Median(theirs) / 1e9 : 0, diff);
    }

    private static double Time(Action run)
    {
        long start = Stopwatch.GetTimestamp();
        run();
        return Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    private static Tensor Filled(Accelerator acc, Random rng, int[] shape)
    {
        var t = acc.Allocate(shape);
        var span = t.Span;
        for (int i = 0; i < span.Length; i++) span[i] = (float)(rng.NextDouble() * 2 - 1);
        return t;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    }
}
