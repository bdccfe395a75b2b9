using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using UioLlm.Kernels;
using UioLlm.Kernels.Gpu;
using UioLlm.Kernels.Kit;
using UioLlm.Model;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training;
using UioLlm.Training.Estimators;

namespace UioLlm.GpuRunner;

/// <summary>
/// Runs on a GPU machine (self-contained, no .NET needed there):
///   1. the PTX compile report of every ILGPU kernel (lines, virtual registers, local memory),
///   2. the kernel parity suite, the ILGPU kernels on CUDA against the CPU kernels, ending with "N passed, N failed",
///   3. kernel benchmarks (GFLOP/s, GB/s) and the end-to-end UIO training / inference step on the stories15M shape,
///   4. with --torch FILE (written by torch_compare.py), the ratio to PyTorch on the same shapes.
/// Without a GPU: --compile-only [sm_80|sm_90] compiles every kernel to PTX; --cpu-accelerator runs the (tiny) parity
/// suite on ILGPU's CPU accelerator instead of CUDA.
/// Exit code: 0 when every parity case passed, 1 when some failed, 2 when CUDA is unusable.
/// </summary>
public static class Program
{
    private sealed record Options(bool Parity, bool Bench, bool EndToEnd, string? Filter, bool Verbose, bool Quick, string? Json, string? Torch, bool CpuAccelerator);

    public static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        if (args.Length >= 1 && args[0] == "--compile-only")
            return CompileOnly(args.Length > 1 ? args[1] : "sm_80");

        Options o;
        try
        {
            o = Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine("usage: UioLlm.GpuRunner [--compile-only sm_80|sm_90] | [--cpu-accelerator] [--parity-only | --bench-only] [--filter TEXT] [--verbose] [--quick] [--json FILE] [--torch FILE] [--no-e2e]");
            return 2;
        }

        string? reason = o.CpuAccelerator ? null : IlgpuAccelerator.CudaUnavailableReason();
        if (reason is not null)
        {
            Console.WriteLine($"CUDA unavailable: {reason} (--cpu-accelerator runs the parity suite on ILGPU's CPU accelerator)");
            Console.WriteLine("0 passed, 0 failed");
            return 2;
        }
        using var gpu = o.CpuAccelerator ? Accelerator.Create(AcceleratorKind.IlgpuCpu) : Accelerator.Create(AcceleratorKind.Cuda);
        using var cpu = Accelerator.Create(AcceleratorKind.Cpu);
        Console.WriteLine(gpu.Description);
        Console.WriteLine(cpu.Description);

        if (!o.CpuAccelerator) CompileOnly("sm_80");
        int failed = 0;
        if (o.Parity) failed = RunParity(cpu, gpu, o);
        var results = new List<BenchResult>();
        if (o.Bench && o.CpuAccelerator) Console.WriteLine("benchmarks skipped: ILGPU's CPU accelerator simulates a GPU thread by thread (correctness only)");
        else if (o.Bench)
        {
            results.AddRange(Bench.Kernels(gpu, o.Quick));
            if (o.EndToEnd) results.AddRange(Bench.EndToEnd(gpu, o.Quick));
            Bench.Print(results, o.Torch);
            if (o.Json is not null)
            {
                File.WriteAllText(o.Json, JsonSerializer.Serialize(results.Select(r => new Dictionary<string, object>
                {
                    ["name"] = r.Name, ["ms"] = r.Milliseconds, ["gflops"] = r.GFlops, ["gbps"] = r.GBytes,
                }).ToList(), new JsonSerializerOptions { WriteIndented = true }));
                Console.WriteLine($"wrote {o.Json}");
            }
        }
        return failed == 0 ? 0 : 1;
    }

    /// <summary>--compile-only ARCH: every ILGPU kernel compiled to PTX for sm_80 or sm_90 (no GPU needed). Exit 1 when one fails.</summary>
    private static int CompileOnly(string arch)
    {
        var (architecture, isa) = arch switch
        {
            "sm_80" or "80" => (ILGPU.Runtime.Cuda.CudaArchitecture.SM_80, ILGPU.Runtime.Cuda.CudaInstructionSet.ISA_78),
            "sm_90" or "90" => (ILGPU.Runtime.Cuda.CudaArchitecture.SM_90, ILGPU.Runtime.Cuda.CudaInstructionSet.ISA_78),
            _ => throw new ArgumentException($"--compile-only: expected sm_80 or sm_90, got '{arch}'"),
        };
        Console.WriteLine();
        Console.WriteLine($"== PTX compile report (asked for {arch}, PTX ISA 7.8; ILGPU 1.5.3 emits sm_80 PTX at most, which the driver JITs for newer GPUs)");
        try
        {
            var results = PtxCompiler.CompileAll(architecture, isa);
            foreach (var r in results) Console.WriteLine("  " + r);
            if (Environment.GetEnvironmentVariable("UIOLLM_PTX_DUMP") is { Length: > 0 } dump)
            {
                Directory.CreateDirectory(dump);
                foreach (var r in results) File.WriteAllText(Path.Combine(dump, r.Kernel + ".ptx"), r.Ptx);
                Console.WriteLine($"PTX written to {dump}");
            }
            Console.WriteLine($"{results.Count} kernels compiled for {arch}");
            return 0;
        }
        catch (InvalidOperationException e)
        {
            Console.WriteLine(e.Message);
            return 1;
        }
    }

    private static Options Parse(string[] args)
    {
        bool parity = true, bench = true, e2e = true, verbose = false, quick = false, cpuAccelerator = false;
        string? filter = null, json = null, torch = null;
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--parity-only": bench = false; break;
                case "--bench-only": parity = false; break;
                case "--no-e2e": e2e = false; break;
                case "--filter": filter = Value(); break;
                case "--verbose": verbose = true; break;
                case "--quick": quick = true; break;
                case "--json": json = Value(); break;
                case "--torch": torch = Value(); break;
                case "--cpu-accelerator": cpuAccelerator = true; break;
                default: throw new ArgumentException($"unknown option '{args[i]}'");
            }
        }
        return new Options(parity, bench, e2e, filter, verbose, quick, json, torch, cpuAccelerator);
    }

    private static int RunParity(Accelerator cpu, Accelerator gpu, Options o)
    {
        Console.WriteLine();
        Console.WriteLine($"== Kernel parity: {gpu.Description} against the CPU kernels");
        var cases = KernelParity.For(gpu.Kind == AcceleratorKind.IlgpuCpu ? ParitySize.Tiny : ParitySize.Full).Where(c => o.Filter is null || c.Name.Contains(o.Filter, StringComparison.OrdinalIgnoreCase)).ToList();
        int passed = 0, failed = 0;
        var clock = Stopwatch.StartNew();
        foreach (var c in cases)
        {
            var r = KernelParity.Run(c, cpu, gpu);
            if (r.Passed) passed++;
            else failed++;
            if (!r.Passed || o.Verbose) Console.WriteLine($"  {(r.Passed ? "ok  " : "FAIL")} {r.Case}: {r.Detail}");
        }
        var byOp = cases.GroupBy(c => c.Op).Select(g => $"{g.Key} {g.Count()}");
        Console.WriteLine($"  cases per op: {string.Join(", ", byOp)}  ({clock.Elapsed.TotalSeconds:F1} s)");
        Console.WriteLine($"{passed} passed, {failed} failed");
        return failed;
    }
}

/// <summary>One timed measurement.</summary>
public sealed record BenchResult(string Name, double Milliseconds, double GFlops, double GBytes);

internal static class Bench
{
    /// <summary>Median time of <paramref name="body"/> in ms (after warm-up), synchronizing around each timed batch.</summary>
    public static double Time(Accelerator acc, Action body, bool quick)
    {
        for (int i = 0; i < 2; i++) body();
        acc.Synchronize();
        var clock = Stopwatch.StartNew();
        body();
        acc.Synchronize();
        double once = clock.Elapsed.TotalMilliseconds;
        int reps = (int)Math.Clamp((quick ? 20 : 100) / Math.Max(once, 1e-3), 1, quick ? 50 : 200);
        var samples = new List<double>();
        for (int s = 0; s < 5; s++)
        {
            clock.Restart();
            for (int r = 0; r < reps; r++) body();
            acc.Synchronize();
            samples.Add(clock.Elapsed.TotalMilliseconds / reps);
        }
        samples.Sort();
        return samples[samples.Count / 2];
    }

    private static Tensor Random(Accelerator acc, Random rng, params int[] shape)
    {
        int n = 1;
        foreach (int s in shape) n *= s;
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
        return acc.FromArray(data, shape, null);
    }

    public static IEnumerable<BenchResult> Kernels(Accelerator gpu, bool quick)
    {
        var k = gpu.Kernels;
        var rng = new Random(5);
        var results = new List<BenchResult>();
        void Add(string name, double ms, double flops, double bytes)
        {
            var r = new BenchResult(name, ms, flops / ms / 1e6, bytes / ms / 1e6);
            results.Add(r);
            Console.WriteLine($"  {r.Name,-58} {r.Milliseconds,10:F4} ms {r.GFlops,10:F1} GFLOP/s {r.GBytes,9:F1} GB/s");
        }
        Console.WriteLine();
        Console.WriteLine("== Kernel benchmarks");

        // GEMM: square sizes (against torch.matmul) and the stories15M step's projections.
        var gemms = new (int M, int N, int K, bool TB)[]
        {
            (4096, 4096, 4096, false), (4096, 4096, 4096, true), (2048, 2048, 2048, false), (1024, 1024, 1024, false),
            (256, 288, 288, true), (256, 768, 288, true), (256, 288, 768, true), (256, 32000, 288, true), (1, 32000, 288, true),
        };
        foreach (var (m, n, kk, tb) in gemms)
        {
            if (quick && m * (long)n * kk > (1L << 33)) continue;
            using var a = Random(gpu, rng, m, kk);
            using var b = tb ? Random(gpu, rng, n, kk) : Random(gpu, rng, kk, n);
            using var c = gpu.Allocate(m, n);
            double ms = Time(gpu, () => k.MatMul(a, b, c, false, tb), quick);
            Add($"gemm {(tb ? "NT" : "NN")} {m}x{n}x{kk}", ms, 2.0 * m * n * kk, 4.0 * ((long)m * kk + (long)kk * n + 2L * m * n));
        }

        // Attention: SDPA shapes and the stories15M layer (6 heads of 48).
        var attns = new (int B, int H, int T, int D, bool Causal)[]
        {
            (1, 6, 256, 48, true), (4, 16, 1024, 64, true), (4, 32, 2048, 128, true), (4, 32, 2048, 128, false), (1, 16, 4096, 64, true),
        };
        foreach (var (b, h, t, d, causal) in attns)
        {
            if (quick && (long)b * h * t * t * d > (1L << 33)) continue;
            using var q = Random(gpu, rng, b, t, h, d);
            using var kt = Random(gpu, rng, b, t, h, d);
            using var v = Random(gpu, rng, b, t, h, d);
            using var o = gpu.Allocate(b, t, h, d);
            using var lse = gpu.Allocate(b, h, t);
            using var dO = Random(gpu, rng, b, t, h, d);
            using var dq = gpu.Allocate(b, t, h, d);
            using var dk = gpu.Allocate(b, t, h, d);
            using var dv = gpu.Allocate(b, t, h, d);
            var mask = causal ? AttentionMask.CausalMask() : AttentionMask.None;
            double flops = 4.0 * b * h * t * t * d * (causal ? 0.5 : 1.0);
            string name = $"sdpa {(causal ? "causal" : "full")} B={b} H={h} T={t} D={d}";
            double fwd = Time(gpu, () => k.Attention(q, kt, v, o, lse, mask), quick);
            Add($"{name} fwd", fwd, flops, 4.0 * 4 * b * t * h * d);
            double bwd = Time(gpu, () => k.AttentionBackward(q, kt, v, o, dO, lse, mask, dq, dk, dv), quick);
            Add($"{name} bwd", bwd, 2.5 * flops, 4.0 * 8 * b * t * h * d);
        }

        // Bandwidth-bound ops.
        int rows = 4096, dim = 4096, n1 = rows * dim;
        using (var x = Random(gpu, rng, rows, dim))
        using (var w = Random(gpu, rng, dim))
        using (var y = gpu.Allocate(rows, dim))
        using (var r = gpu.Allocate(rows))
        using (var dx = gpu.Allocate(rows, dim))
        using (var dw = gpu.Allocate(dim))
        {
            Add($"rmsnorm {rows}x{dim}", Time(gpu, () => k.RmsNorm(x, w, y, r, 1e-5f), quick), 3.0 * n1, 8.0 * n1);
            Add($"rmsnorm bwd {rows}x{dim}", Time(gpu, () => k.RmsNormBackward(x, w, r, y, dx, dw), quick), 8.0 * n1, 5 * 4.0 * n1);
            Add($"swiglu {n1}", Time(gpu, () => k.SwiGlu(x, dx, y), quick), 5.0 * n1, 12.0 * n1);
            Add($"add {n1}", Time(gpu, () => k.Add(x, dx, y), quick), n1, 12.0 * n1);
            Add($"axpy {n1}", Time(gpu, () => k.Axpy(0.5f, x, y), quick), 2.0 * n1, 12.0 * n1);
            Add($"copy {n1}", Time(gpu, () => k.Copy(x, y), quick), 0, 8.0 * n1);
            using var m = gpu.Allocate(rows, dim);
            using var v = gpu.Allocate(rows, dim);
            Add($"adamw {n1}", Time(gpu, () => k.AdamW(y, x, m, v, new AdamWStep(1e-3f, 3)), quick), 12.0 * n1, 28.0 * n1);
            Add($"global norm {n1}", Time(gpu, () => k.GlobalNorm([x]), quick), 2.0 * n1, 4.0 * n1);
            var table = RopeTable.Create(128);
            var pos = Enumerable.Range(0, rows).ToArray();
            var xr = x.View(rows, 32, 128);
            Add($"rope {rows}x32x128", Time(gpu, () => k.Rope(xr, xr, pos, table), quick), 6.0 * n1, 8.0 * n1);
        }
        int tokens = 2048, vocab = 32000;
        using (var logits = Random(gpu, rng, tokens, vocab))
        using (var lse = gpu.Allocate(tokens))
        using (var dl = gpu.Allocate(tokens, vocab))
        {
            var targets = Enumerable.Range(0, tokens).Select(i => i * 7 % vocab).ToArray();
            long n2 = (long)tokens * vocab;
            Add($"cross-entropy {tokens}x{vocab}", Time(gpu, () => k.CrossEntropy(logits, targets, lse), quick), 3.0 * n2, 8.0 * n2);
            Add($"cross-entropy bwd {tokens}x{vocab}", Time(gpu, () => k.CrossEntropyBackward(logits, targets, lse, dl), quick), 4.0 * n2, 12.0 * n2);
            using var emb = gpu.Allocate(tokens, 288);
            using var tab = Random(gpu, rng, vocab, 288);
            Add($"embedding {tokens}x288", Time(gpu, () => k.Embedding(tab, targets, emb), quick), 0, 8.0 * tokens * 288);
        }
        return results;
    }

    /// <summary>The UIO training step and inference on the stories15M shape, on the GPU (as the CLI's bench does on the CPU).</summary>
    public static IEnumerable<BenchResult> EndToEnd(Accelerator gpu, bool quick)
    {
        var results = new List<BenchResult>();
        Console.WriteLine();
        Console.WriteLine("== End-to-end on the stories15M shape (random weights)");
        try
        {
            int l = quick ? 64 : 256, n = l / 8, segments = 4;
            var shape = LlamaConfig.Stories15MShape with { MaxSeqLen = 4096 };
            using var weights = LlamaWeights.Random(gpu, shape, seed: 1);
            double best = StepBenchmark.BestSeconds(gpu, l, segments);
            var train = new BenchResult($"uio train step l={l} n={n} x{segments} (tokens/s in GFLOP/s column)", best * 1000, segments * l / best / 1e9, 0);
            results.Add(train);
            Console.WriteLine($"  UIO training step (unbiased S=2, l={l}, n={n}, {segments} segments): {best * 1000:F1} ms, {segments * l / best:F0} tokens/s");

            var model = new LlamaModel(weights);
            int promptLength = 128;
            var prompt = Enumerable.Range(0, promptLength).Select(i => (i * 7919) % model.Config.VocabSize).ToArray();
            using var buffers = model.NewInferenceBuffers(promptLength);
            using var cache = model.NewCache(promptLength);
            double prefill = 0;
            for (int r = 0; r < 3; r++)
            {
                cache.Clear();
                gpu.Synchronize();
                var clock = Stopwatch.StartNew();
                model.Infer(prompt, cache, buffers);
                gpu.Synchronize();
                if (r > 0) prefill = Math.Max(prefill, promptLength / clock.Elapsed.TotalSeconds);
            }
            Console.WriteLine($"  prefill {promptLength} tokens: {prefill:F0} tokens/s");
            var generator = new Generator(model);
            var result = generator.Generate([model.Config.BosId], new GenerationOptions { MaxNewTokens = quick ? 32 : 128, StopTokens = [] });
            Console.WriteLine($"  decode: {result.DecodeTokensPerSecond:F0} tokens/s");
            results.Add(new BenchResult("prefill 128 (tokens/s in GFLOP/s column)", promptLength / prefill * 1000, prefill / 1e9, 0));
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or NotSupportedException)
        {
            Console.WriteLine($"  end-to-end step not run: {e.GetType().Name}: {e.Message}");
        }
        return results;
    }

    /// <summary>With a torch_compare.py JSON (name -> ms), print ours against PyTorch's for the shared names.</summary>
    public static void Print(List<BenchResult> results, string? torchFile)
    {
        if (torchFile is null) return;
        var torch = JsonSerializer.Deserialize<Dictionary<string, double>>(File.ReadAllText(torchFile)) ?? [];
        Console.WriteLine();
        Console.WriteLine($"== Against PyTorch ({torchFile}); ratio = PyTorch time / our time (>= 0.7 GEMM, >= 0.5 attention fwd)");
        Console.WriteLine($"  {"shape",-52} {"ours ms",10} {"torch ms",10} {"ratio",7}");
        foreach (var r in results)
            if (torch.TryGetValue(r.Name, out double ms))
                Console.WriteLine($"  {r.Name,-52} {r.Milliseconds,10:F4} {ms,10:F4} {ms / r.Milliseconds,7:F2}");
    }
}
