using BenchmarkDotNet.Running;
using UioLlm.Bench;

// Side-by-side runners (quick Stopwatch medians, printed as tables):
//   blas      [--quick] [--threads 1,2] [--sizes 512,2048,vocab,decode]   our MatMul vs OpenBLAS cblas_sgemm
//   attention [--quick] [--threads 1,2]                                   attention forward/backward GFLOP/s vs our MatMul rate
//   inference [--quick] [--threads 1,2] [--runc PATH] [--llama-cpp DIR] [--work DIR]
//                                                                         decode/prefill tokens/s (f32 vs run.c), decode with Q8_0/Q4_0/Q4_K vs f32 and llama.cpp
//   tokenizers [--quick]                                                  encode/decode MB/s on Moby Dick, both tokenizers
//   uio-cost [--contexts 1024,4096,16384,65536] [--full-max 16384] [--threads 2]   UIO vs full attention: time and KV memory
//   estimators [--quick] [--segments 8,16]                                the paper's Table 4: each estimator's gradient vs the exact one
//   tbptt-cost [--quick] [--threads 2]                                   time and tape memory per step vs S: naive TBPTT vs incremental
//   train-speed [--quick] [--threads 1,2] [--step-only] [--repeats N]                               UIO training step on the stories15M shape: tokens/s, effective GFLOP/s
// Anything else goes to BenchmarkDotNet, e.g. `-- --filter *MatMul*` or `-- --list flat`.
string? Value(string name)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}

List<int>? Threads()
{
    string? v = Value("--threads");
    if (v is null) return null;
    var list = new List<int>();
    foreach (string part in v.Split(','))
    {
        if (!int.TryParse(part, out int t) || t <= 0)
        {
            Console.Error.WriteLine($"--threads: '{part}' is not a positive thread count (expected e.g. 1,2)");
            Environment.Exit(2);
        }
        list.Add(t);
    }
    return list;
}

if (args.Length > 0 && args[0] == "blas")
{
    List<string>? sizes = Value("--sizes") is { } s ? [.. s.Split(',')] : null;
    return BlasSideBySide.Run(args.Contains("--quick"), Threads(), sizes);
}
if (args.Length > 0 && args[0] == "attention")
{
    AttentionSideBySide.Run(Console.Out, args.Contains("--quick"), Threads());
    return 0;
}
if (args.Length > 0 && args[0] == "inference")
{
    InferenceSideBySide.Run(Console.Out, args.Contains("--quick"), Threads(), Value("--runc"), Value("--llama-cpp"), Value("--work"));
    return 0;
}
if (args.Length > 0 && args[0] == "tokenizers")
{
    TokenizerSideBySide.Run(Console.Out, args.Contains("--quick"));
    return 0;
}
if (args.Length > 0 && args[0] == "uio-cost")
{
    var contexts = (Value("--contexts") ?? "1024,4096,16384,65536").Split(',').Select(int.Parse).ToList();
    int fullMax = int.Parse(Value("--full-max") ?? "16384");
    UioCostSideBySide.Run(Console.Out, contexts, fullMax, Threads()?[0] ?? 2);
    return 0;
}
if (args.Length > 0 && args[0] == "estimators")
{
    List<int>? segments = Value("--segments") is { } s ? [.. s.Split(',').Select(int.Parse)] : null;
    EstimatorSideBySide.Run(Console.Out, args.Contains("--quick"), segments);
    return 0;
}
if (args.Length > 0 && args[0] == "tbptt-cost")
{
    TbpttCostSideBySide.Run(Console.Out, args.Contains("--quick"), Threads()?[0] ?? 2);
    return 0;
}
if (args.Length > 0 && args[0] == "train-speed")
{
    TrainSpeedSideBySide.Run(Console.Out, args.Contains("--quick"), Threads(), args.Contains("--step-only"),
        Value("--repeats") is { } n ? int.Parse(n, System.Globalization.CultureInfo.InvariantCulture) : null);
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(BlasSideBySide).Assembly).Run(args);
return 0;
