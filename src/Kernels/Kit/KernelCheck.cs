using System.Diagnostics;

namespace UioLlm.Kernels.Kit;

/// <summary>One case run by <see cref="KernelCheck"/>: the parity result and its wall time (both backends, inputs and comparison).</summary>
public sealed record CheckedCase(int Index, ParityResult Result, double Milliseconds);

/// <summary>
/// Runs parity cases of one op (or all) on a device accelerator against the CPU kernels and times both sides: the
/// engine behind `uio kernels --op X --check` and the crash-isolated CI run on ILGPU's CPU accelerator.
/// </summary>
public static class KernelCheck
{
    /// <summary>The cases of <paramref name="op"/> (null: every op) in the list of the given size, with their index in that list.</summary>
    public static List<(int Index, ParityCase Case)> Select(ParitySize size, string? op)
    {
        var all = KernelParity.For(size);
        var picked = new List<(int, ParityCase)>();
        for (int i = 0; i < all.Count; i++)
            if (op is null || string.Equals(all[i].Op, op, StringComparison.OrdinalIgnoreCase)) picked.Add((i, all[i]));
        return picked;
    }

    /// <summary>Every op name that has cases.</summary>
    public static IReadOnlyList<string> Ops => KernelParity.Cases.Select(c => c.Op).Distinct().ToList();

    /// <summary>
    /// Run the cases in order. With <paramref name="protocol"/>, before each case a line "START index" is written and
    /// flushed, and after it "RESULT index PASS|FAIL ms detail": a parent process that sees START without
    /// RESULT knows which case took the process down (a kernel fault on ILGPU's CPU accelerator ends the process).
    /// </summary>
    public static List<CheckedCase> Run(IEnumerable<(int Index, ParityCase Case)> cases, Accelerator reference, Accelerator device,
        TextWriter? protocol = null, Action<CheckedCase>? onResult = null)
    {
        var results = new List<CheckedCase>();
        foreach (var (index, c) in cases)
        {
            if (protocol is not null)
            {
                protocol.WriteLine($"START {index}");
                protocol.Flush();
            }
            var sw = Stopwatch.StartNew();
            var r = KernelParity.Run(c, reference, device);
            var done = new CheckedCase(index, r, sw.Elapsed.TotalMilliseconds);
            results.Add(done);
            if (protocol is not null)
            {
                protocol.WriteLine($"RESULT {index} {(r.Passed ? "PASS" : "FAIL")} {done.Milliseconds:F1} {Escape(r.Detail)}");
                protocol.Flush();
            }
            onResult?.Invoke(done);
        }
        return results;
    }

    private static string Escape(string s) => s.Replace('\n', ' ').Replace('\r', ' ');

    /// <summary>Milliseconds of <paramref name="action"/> on <paramref name="acc"/>, synchronized.</summary>
    public static double Time(Accelerator acc, Action action)
    {
        var sw = Stopwatch.StartNew();
        action();
        acc.Synchronize();
        return sw.Elapsed.TotalMilliseconds;
    }
}
