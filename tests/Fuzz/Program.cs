using UioLlm.Fuzz;
using UioLlm.Kernels;

// uio-independent, in-process mutation fuzzer for every parser of the project.
//   dotnet run -c Release --project tests/Fuzz -- [--inputs 100000] [--seed 1] [--targets a,b] [--data DIR] [--work DIR]
//                                                 [--time-limit-ms 10000] [--memory-limit-mb 1024]
// Prints one table row per parser (inputs, accepted, typed errors, untyped exceptions, hangs, memory blow-ups) and saves
// one input per distinct failure under WORK/failures. Exit code 0 when every parser is clean, 1 otherwise, 2 for bad arguments.
string? Value(string name)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}

int Int(string name, int fallback)
{
    string? v = Value(name);
    if (v is null) return fallback;
    if (int.TryParse(v, out int n) && n > 0) return n;
    Console.Error.WriteLine($"{name}: '{v}' is not a positive integer");
    Environment.Exit(2);
    return 0;
}

int inputs = Int("--inputs", 1000), seed = Int("--seed", 1), timeMs = Int("--time-limit-ms", 10000), memoryMb = Int("--memory-limit-mb", 1024);
string? data = Value("--data") ?? Environment.GetEnvironmentVariable("UIOLLM_DATA") ?? Path.Combine("..", "shared", "data");
if (!Directory.Exists(data))
{
    Console.Error.WriteLine($"--data: '{data}' does not exist (the shared test data folder; or set UIOLLM_DATA)");
    return 2;
}
string work = Value("--work") ?? Path.Combine(Path.GetTempPath(), $"uiollm-fuzz-{Environment.ProcessId}");
var only = Value("--targets")?.Split(',', StringSplitOptions.RemoveEmptyEntries);
foreach (var t in only ?? [])
    if (!FuzzTargets.Names.Contains(t))
    {
        Console.Error.WriteLine($"--targets: unknown parser '{t}'; expected some of {string.Join(", ", FuzzTargets.Names)}");
        return 2;
    }

using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads: 1);
var targets = FuzzTargets.Create(data, work, accelerator, only);
Console.WriteLine($"fuzzing {targets.Count} parsers, {inputs:N0} inputs each, seed {seed}, limits {timeMs} ms and {memoryMb} MB per input; work folder {work}");
var reports = FuzzRunner.Run(targets, inputs, seed, work, TimeSpan.FromMilliseconds(timeMs), memoryMb * 1024L * 1024L, Console.Out);
Console.WriteLine();
Console.Write(FuzzRunner.Table(reports));
foreach (var r in reports)
    foreach (var (key, (count, sample, example)) in r.Failures)
        Console.WriteLine($"\n{r.Target}: {count} x {key}\n  sample: {sample}\n  {example.Replace("\n", "\n  ")}");
return reports.All(r => r.Clean) ? 0 : 1;
