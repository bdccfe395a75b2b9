using BenchmarkDotNet.Attributes;
using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;

namespace UioLlm.Bench;

/// <summary>
/// MatMul at 512 tokens: y = x W^T (NT, the linear layer) and the other transpose cases (NN, TN: the weight
/// gradient, TT), K and N in {512 .. 4096}. Throughput: 2 M N K flops per op.
/// </summary>
[ShortRunJob]
[MemoryDiagnoser]
public class MatMulBenchmarks
{
    private Accelerator acc = null!;
    private Tensor a = null!, b = null!, c = null!;

    [Params(512, 1024, 2048, 4096)]
    public int K { get; set; }

    [Params(512, 1024, 2048, 4096)]
    public int N { get; set; }

    [Params("NT", "NN", "TN", "TT")]
    public string Op { get; set; } = "NT";

    [Params(0)]
    public int Threads { get; set; }

    public const int M = 512;

    private bool TransA => Op[0] == 'T';

    private bool TransB => Op[1] == 'T';

    [GlobalSetup]
    public void Setup()
    {
        acc = new CpuAccelerator(Threads);
        a = Random(acc, TransA ? [K, M] : [M, K]);
        b = Random(acc, TransB ? [N, K] : [K, N]);
        c = acc.Allocate(M, N);
    }

    [Benchmark]
    public void MatMul() => acc.Kernels.MatMul(a, b, c, TransA, TransB);

    [GlobalCleanup]
    public void Cleanup()
    {
        a.Dispose();
        b.Dispose();
        c.Dispose();
        acc.Dispose();
    }

    internal static Tensor Random(Accelerator acc, int[] shape)
    {
        var rng = new Random(7);
        var t = acc.Allocate(shape);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 2 - 1) * 0.1f;
        return t;
    }
}

/// <summary>The vocabulary projection: logits [512, 32000] = h [512, 1024] W^T, forward and its two gradients.</summary>
[ShortRunJob]
public class VocabProjectionBenchmarks
{
    private Accelerator acc = null!;
    private Tensor h = null!, w = null!, logits = null!, dh = null!, dw = null!;

    public const int Tokens = 512, Vocab = 32000;

    [Params(1024)]
    public int Hidden { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        acc = new CpuAccelerator();
        h = MatMulBenchmarks.Random(acc, [Tokens, Hidden]);
        w = MatMulBenchmarks.Random(acc, [Vocab, Hidden]);
        logits = acc.Allocate(Tokens, Vocab);
        dh = acc.Allocate(Tokens, Hidden);
        dw = acc.Allocate(Vocab, Hidden);
    }

    [Benchmark]
    public void Forward() => acc.Kernels.MatMul(h, w, logits, transB: true);

    [Benchmark]
    public void Backward() => acc.Kernels.MatMulBackward(h, w, logits, dh, dw, transB: true);

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { h, w, logits, dh, dw }) t.Dispose();
        acc.Dispose();
    }
}
