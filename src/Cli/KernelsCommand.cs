using System.Diagnostics;
using Spectre.Console;
using UioLlm.Kernels;

namespace UioLlm.Cli;

/// <summary>`uio kernels`: which device runs the kernels and how fast the main ones are here.</summary>
internal static class KernelsCommand
{
    public static int Run(int threads, bool quick, TextWriter output, TextWriter error)
    {
        if (threads < 0)
        {
            error.WriteLine($"uio kernels: --threads must be 0 (all cores) or a positive number, got {threads}");
            return 2;
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output) });
        using var acc = Accelerator.Create(AcceleratorKind.Auto, threads);
        console.MarkupLineInterpolated($"[bold]UioLlm[/] kernels on {acc.Description}");
        if (acc.FallbackReason is { } why) console.MarkupLineInterpolated($"[grey]{why}[/]");

        var results = new List<KernelResult>();
        console.Progress().AutoClear(true).Start(ctx =>
        {
            var cases = Cases(quick);
            var task = ctx.AddTask("measuring", maxValue: cases.Count);
            foreach (var c in cases)
            {
                results.Add(MeasureCase(acc, c, quick));
                task.Increment(1);
            }
        });
        var table = new Table().AddColumns("kernel", "shape", "ms", "GFLOP/s");
        foreach (var r in results) table.AddRow(r.Kernel, r.Shape, r.Milliseconds.ToString("F2"), r.GigaflopsPerSecond.ToString("F1"));
        console.Write(table);
        return 0;
    }

    /// <summary>
    /// `uio kernels --check [--op X] [--backend ilgpu-cpu|cuda|auto] [--size tiny|full]`: the op's parity cases on the
    /// device backend against the CPU kernels, one line per case with its time, then a summary. Exit 0 when all pass,
    /// 1 when some fail, 2 for a usage mistake or an unusable backend. --protocol prints machine-readable START/RESULT
    /// lines (used by the crash-isolated CI run); --from N skips the cases before index N of the list, --count N runs at most N.
    /// </summary>
    public static int Check(string? op, string backend, string size, int from, bool protocol, TextWriter output, TextWriter error, int count = int.MaxValue)
    {
        if (op is not null && !UioLlm.Kernels.Kit.KernelCheck.Ops.Contains(op, StringComparer.OrdinalIgnoreCase))
        {
            error.WriteLine($"uio kernels: --op '{op}' is not an op of the kernel contract; expected one of {string.Join(", ", UioLlm.Kernels.Kit.KernelCheck.Ops)}");
            return 2;
        }
        UioLlm.Kernels.Kit.ParitySize paritySize;
        switch (size.ToLowerInvariant())
        {
            case "tiny": paritySize = UioLlm.Kernels.Kit.ParitySize.Tiny; break;
            case "full": paritySize = UioLlm.Kernels.Kit.ParitySize.Full; break;
            default:
                error.WriteLine($"uio kernels: --size must be tiny or full, got '{size}'");
                return 2;
        }
        if (count <= 0)
        {
            error.WriteLine($"uio kernels: --count must be positive, got {count}");
            return 2;
        }
        if (from < 0)
        {
            error.WriteLine($"uio kernels: --from must be 0 or more, got {from}");
            return 2;
        }
        Accelerator device;
        try
        {
            device = backend.ToLowerInvariant() switch
            {
                "ilgpu-cpu" => Accelerator.Create(AcceleratorKind.IlgpuCpu),
                "cuda" => Accelerator.Create(AcceleratorKind.Cuda),
                "auto" => UioLlm.Kernels.Gpu.IlgpuAccelerator.CudaUnavailableReason() is null ? Accelerator.Create(AcceleratorKind.Cuda) : Accelerator.Create(AcceleratorKind.IlgpuCpu),
                "cpu" => Accelerator.Create(AcceleratorKind.Cpu, 1),
                _ => throw new ArgumentException($"--backend must be ilgpu-cpu, cuda, auto or cpu, got '{backend}'"),
            };
        }
        catch (Exception e) when (e is ArgumentException or AcceleratorUnavailableException)
        {
            error.WriteLine($"uio kernels: {e.Message}");
            return 2;
        }
        using (device)
        {
            using var reference = Accelerator.Create(AcceleratorKind.Cpu);
            var cases = UioLlm.Kernels.Kit.KernelCheck.Select(paritySize, op).Where(c => c.Index >= from).Take(count).ToList();
            if (!protocol) output.WriteLine($"kernel check: {cases.Count} {size} case(s){(op is null ? "" : $" of {op}")} on {device.Description} against {reference.Description}");
            var results = UioLlm.Kernels.Kit.KernelCheck.Run(cases, reference, device, protocol ? output : null, protocol ? null : r =>
                output.WriteLine($"{(r.Result.Passed ? "pass" : "FAIL")}  {r.Milliseconds,9:F1} ms  {r.Result.Case}: {r.Result.Detail}"));
            int failed = results.Count(r => !r.Result.Passed);
            if (!protocol) output.WriteLine($"{results.Count - failed} passed, {failed} failed");
            return failed == 0 ? 0 : 1;
        }
    }

    private sealed record Case(string Kernel, string Shape, double Flops, Func<Accelerator, Action> Prepare);

    /// <summary>One kernel's measurement: median milliseconds and the rate.</summary>
    public sealed record KernelResult(string Kernel, string Shape, double Milliseconds, double GigaflopsPerSecond);

    /// <summary>Measures every kernel case on <paramref name="acc"/> (used by `uio kernels` and `uio bench`).</summary>
    public static List<KernelResult> MeasureAll(Accelerator acc, bool quick) => Cases(quick).Select(c => MeasureCase(acc, c, quick)).ToList();

    private static KernelResult MeasureCase(Accelerator acc, Case c, bool quick)
    {
        double ms = Measure(acc, c, quick ? 5 : 9);
        return new KernelResult(c.Kernel, c.Shape, ms, c.Flops / (ms * 1e6));
    }

    private static List<Case> Cases(bool quick)
    {
        int m = 512, kn = quick ? 1024 : 2048, keys = quick ? 1024 : 4096;
        const int heads = 8, dim = 64;
        // Causal self-attention: keys*(keys+1)/2 visible pairs, 4*D flops each forward, 10*D backward.
        double pairs = (double)keys * (keys + 1) / 2 * heads;
        return
        [
            new("MatMul x W^T", $"{m}x{kn} . {kn}x{kn}^T", 2.0 * m * kn * kn, acc =>
            {
                var x = RandomTensor(acc, m, kn); var w = RandomTensor(acc, kn, kn); var y = acc.Allocate(m, kn);
                return () => acc.Kernels.MatMul(x, w, y, transB: true);
            }),
            new("Attention forward", $"causal {keys} keys, {heads} heads, D={dim}", 4.0 * dim * pairs, acc =>
            {
                var (q, k, v, o, lse) = AttentionTensors(acc, keys, heads, dim);
                return () => acc.Kernels.Attention(q, k, v, o, lse, AttentionMask.CausalMask());
            }),
            new("Attention backward", $"causal {keys} keys, {heads} heads, D={dim}", 10.0 * dim * pairs, acc =>
            {
                var (q, k, v, o, lse) = AttentionTensors(acc, keys, heads, dim);
                acc.Kernels.Attention(q, k, v, o, lse, AttentionMask.CausalMask());
                var dO = RandomTensor(acc, keys, heads, dim);
                var dq = acc.Allocate(keys, heads, dim); var dk = acc.Allocate(keys, heads, dim); var dv = acc.Allocate(keys, heads, dim);
                return () => acc.Kernels.AttentionBackward(q, k, v, o, dO, lse, AttentionMask.CausalMask(), dq, dk, dv);
            }),
        ];
    }

    private static (Tensor, Tensor, Tensor, Tensor, Tensor) AttentionTensors(Accelerator acc, int t, int h, int d) =>
        (RandomTensor(acc, t, h, d), RandomTensor(acc, t, h, d), RandomTensor(acc, t, h, d), acc.Allocate(t, h, d), acc.Allocate(h, t));

    private static Tensor RandomTensor(Accelerator acc, params int[] shape)
    {
        var t = acc.Allocate(shape);
        var r = new Random(1234);
        var s = new float[t.Length];
        for (int i = 0; i < s.Length; i++) s[i] = (float)(r.NextDouble() * 2 - 1);
        t.CopyFrom(s);
        return t;
    }

    /// <summary>Median wall time in milliseconds over <paramref name="reps"/> runs after one warm-up.</summary>
    private static double Measure(Accelerator acc, Case c, int reps)
    {
        var run = c.Prepare(acc);
        run();
        acc.Synchronize();
        var times = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            long start = Stopwatch.GetTimestamp();
            run();
            acc.Synchronize();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[reps / 2];
    }
}
