using BenchmarkDotNet.Attributes;
using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;

namespace UioLlm.Bench;

/// <summary>Fused LoRA projection at 512 tokens, 4096 -> 4096, ranks 16..128: forward and backward (dx, dA, dB).</summary>
[ShortRunJob]
[MemoryDiagnoser]
public class LoraBenchmarks
{
    private Accelerator acc = null!;
    private Tensor x = null!, w = null!, loraA = null!, loraB = null!, y = null!, xa = null!, dy = null!, dx = null!, dA = null!, dB = null!;

    public const int Tokens = 512, Dim = 4096;

    [Params(16, 64, 128)]
    public int Rank { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        acc = new CpuAccelerator();
        x = MatMulBenchmarks.Random(acc, [Tokens, Dim]);
        w = MatMulBenchmarks.Random(acc, [Dim, Dim]);
        loraA = MatMulBenchmarks.Random(acc, [Rank, Dim]);
        loraB = MatMulBenchmarks.Random(acc, [Dim, Rank]);
        y = acc.Allocate(Tokens, Dim);
        xa = acc.Allocate(Tokens, Rank);
        dy = MatMulBenchmarks.Random(acc, [Tokens, Dim]);
        dx = acc.Allocate(Tokens, Dim);
        dA = acc.Allocate(Rank, Dim);
        dB = acc.Allocate(Dim, Rank);
    }

    [Benchmark]
    public void Forward() => acc.Kernels.LoraMatMul(x, w, loraA, loraB, 2f, y, xa);

    [Benchmark]
    public void Backward() => acc.Kernels.LoraMatMulBackward(x, w, loraA, loraB, 2f, xa, dy, dx, dA, dB);

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { x, w, loraA, loraB, y, xa, dy, dx, dA, dB }) t.Dispose();
        acc.Dispose();
    }
}
