using BenchmarkDotNet.Running;
using UioLlm.Bench;

// `blas [--quick] [--threads 1,2] [--sizes 512,2048,vocab,decode]` runs the OpenBLAS side-by-side table; anything else goes to BenchmarkDotNet
// (e.g. `-- --filter *MatMul*`).
if (args.Length > 0 && args[0] == "blas")
{
    bool quick = args.Contains("--quick");
    int at = Array.IndexOf(args, "--threads");
    List<int>? threads = at >= 0 && at + 1 < args.Length ? args[at + 1].Split(',').Select(int.Parse).ToList() : null;
    int si = Array.IndexOf(args, "--sizes");
    List<string>? sizes = si >= 0 && si + 1 < args.Length ? [.. args[si + 1].Split(',')] : null;
    return BlasSideBySide.Run(quick, threads, sizes);
}
BenchmarkSwitcher.FromAssembly(typeof(BlasSideBySide).Assembly).Run(args);
return 0;
