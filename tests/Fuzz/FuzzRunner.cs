using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace UioLlm.Fuzz;

/// <summary>What fuzzing one target found.</summary>
public sealed class FuzzReport
{
    public required string Target { get; init; }
    public int Inputs { get; set; }
    public int Accepted { get; set; }
    public int Typed { get; set; }
    public int Untyped { get; set; }
    public int Hangs { get; set; }
    public int BlowUps { get; set; }
    public long MaxAllocatedBytes { get; set; }
    public double Seconds { get; set; }
    /// <summary>Distinct failures (untyped exceptions by type and stack; hangs; blow-ups): a description, a count and a saved input.</summary>
    public Dictionary<string, (int Count, string Sample, string Example)> Failures { get; } = new(StringComparer.Ordinal);

    public bool Clean => Untyped == 0 && Hangs == 0 && BlowUps == 0;
}

/// <summary>
/// The in-process mutation fuzzer: for each target, copies its seed folder once, then for each input mutates
/// one of the target's files (sometimes two), parses the folder under the <see cref="Watchdog"/>, and restores
/// the files. Deterministic for a seed (the inputs; not the timings).
/// </summary>
public static class FuzzRunner
{
    public static IReadOnlyList<FuzzReport> Run(IReadOnlyList<FuzzTarget> targets, int inputsPerTarget, int seed, string workFolder,
        TimeSpan timeLimit, long memoryLimitBytes, TextWriter? log = null)
    {
        var reports = new List<FuzzReport>();
        string failures = Path.Combine(workFolder, "failures");
        foreach (var target in targets)
        {
            var report = new FuzzReport { Target = target.Name };
            string dir = Path.Combine(workFolder, "inputs", target.Name);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            CopyFolder(target.SeedFolder, dir);
            var originals = Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
                .ToDictionary(p => Path.GetRelativePath(dir, p), File.ReadAllBytes);
            var rng = new Random(HashCode.Combine(seed, StableHash(target.Name)));
            using var watchdog = new Watchdog(timeLimit, memoryLimitBytes, FuzzTargets.IsTyped);
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < inputsPerTarget; i++)
            {
                // Restore the folder exactly (parsers may write, e.g. a resumed run's metrics).
                RestoreFolder(dir, originals);
                var changed = new List<(string File, byte[] Bytes)>();
                int files = target.MutableFiles.Length > 1 && rng.Next(8) == 0 ? 2 : 1;
                for (int f = 0; f < files; f++)
                {
                    string file = target.MutableFiles[rng.Next(target.MutableFiles.Length)];
                    string path = Path.Combine(dir, file);
                    byte[] mutated = Mutator.Mutate(File.ReadAllBytes(path), IsJson(file), rng);
                    File.WriteAllBytes(path, mutated);
                    changed.Add((file, mutated));
                }
                target.AfterMutation?.Invoke(dir, rng);
                var result = watchdog.Run(() => target.Parse(dir));
                report.Inputs++;
                report.MaxAllocatedBytes = Math.Max(report.MaxAllocatedBytes, result.AllocatedBytes);
                switch (result.Outcome)
                {
                    case Outcome.Accepted: report.Accepted++; break;
                    case Outcome.TypedError: report.Typed++; break;
                    default:
                        if (result.Outcome == Outcome.Untyped) report.Untyped++;
                        else if (result.Outcome == Outcome.Hang) report.Hangs++;
                        else report.BlowUps++;
                        string key = FailureKey(result);
                        if (report.Failures.TryGetValue(key, out var known)) report.Failures[key] = (known.Count + 1, known.Sample, known.Example);
                        else
                        {
                            string sample = Path.Combine(failures, $"{target.Name}-{report.Failures.Count:D3}");
                            Directory.CreateDirectory(sample);
                            foreach (var (file, bytes) in changed)
                            {
                                string to = Path.Combine(sample, file.Replace('/', '_').Replace('\\', '_'));
                                File.WriteAllBytes(to, bytes);
                            }
                            report.Failures[key] = (1, sample, Describe(result));
                            log?.WriteLine($"  {target.Name} input {i}: NEW {Describe(result)} -> {sample}");
                        }
                        break;
                }
                if (log is not null && (i + 1) % 10000 == 0)
                    log.WriteLine($"  {target.Name}: {i + 1}/{inputsPerTarget} ({clock.Elapsed.TotalSeconds:F0} s): {report.Accepted} accepted, {report.Typed} typed, {report.Untyped} untyped, {report.Hangs} hangs, {report.BlowUps} over memory");
            }
            RestoreFolder(dir, originals);
            report.Seconds = clock.Elapsed.TotalSeconds;
            reports.Add(report);
            log?.WriteLine(Row(report));
        }
        return reports;
    }

    public static string Table(IReadOnlyList<FuzzReport> reports)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| parser | inputs | accepted | typed errors | untyped (distinct) | hangs | over memory limit | max allocated MB | seconds |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var r in reports) sb.AppendLine(Row(r));
        return sb.ToString();
    }

    private static string Row(FuzzReport r) => string.Create(CultureInfo.InvariantCulture,
        $"| {r.Target} | {r.Inputs:N0} | {r.Accepted:N0} | {r.Typed:N0} | {r.Untyped} ({r.Failures.Count(f => f.Key.StartsWith("untyped", StringComparison.Ordinal))}) | {r.Hangs} | {r.BlowUps} | {r.MaxAllocatedBytes / 1e6:F1} | {r.Seconds:F0} |");

    private static string FailureKey(WatchedResult r) => r.Outcome switch
    {
        Outcome.Hang => "hang",
        Outcome.MemoryBlowUp => "memory " + (r.Exception is null ? "" : StackKey(r.Exception)),
        _ => "untyped " + StackKey(r.Exception!),
    };

    /// <summary>The exception type and the first frames of its stack (line numbers dropped), which tell one bug from another.</summary>
    private static string StackKey(Exception e)
    {
        var frames = new StackTrace(e, false).GetFrames()
            .Select(f => f.GetMethod())
            .Where(m => m is not null)
            .Take(4)
            .Select(m => m!.DeclaringType?.Name + "." + m.Name);
        return e.GetType().Name + " at " + string.Join(" < ", frames);
    }

    private static string Describe(WatchedResult r) => r.Outcome switch
    {
        Outcome.Hang => $"hang (over {r.Elapsed.TotalSeconds:F1} s)",
        Outcome.MemoryBlowUp => $"memory blow-up ({r.AllocatedBytes / 1e6:F0} MB allocated{(r.Exception is null ? "" : ", " + r.Exception.GetType().Name)})",
        _ => $"{r.Exception!.GetType().Name}: {r.Exception.Message}\n{r.Exception.StackTrace}",
    };

    private static bool IsJson(string file) => file.EndsWith(".json", StringComparison.OrdinalIgnoreCase);

    private static int StableHash(string s)
    {
        int h = 17;
        foreach (char c in s) h = h * 31 + c;
        return h;
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
        }
    }

    private static void RestoreFolder(string dir, Dictionary<string, byte[]> originals)
    {
        foreach (var file in Directory.GetFiles(dir, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(dir, file);
            if (!originals.ContainsKey(relative)) File.Delete(file);
        }
        foreach (var sub in Directory.GetDirectories(dir, "*", SearchOption.AllDirectories).OrderByDescending(d => d.Length))
        {
            string relative = Path.GetRelativePath(dir, sub);
            if (!originals.Keys.Any(k => k.StartsWith(relative + Path.DirectorySeparatorChar, StringComparison.Ordinal)))
                Directory.Delete(sub, true);
        }
        foreach (var (relative, bytes) in originals)
        {
            string path = Path.Combine(dir, relative);
            var info = new FileInfo(path);
            if (info.Exists && info.Length == bytes.Length && File.ReadAllBytes(path).AsSpan().SequenceEqual(bytes)) continue;
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, bytes);
        }
    }
}
