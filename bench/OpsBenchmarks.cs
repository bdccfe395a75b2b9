using BenchmarkDotNet.Attributes;
using UioLlm.Kernels;

namespace UioLlm.Bench;

/// <summary>The memory-bound ops at LLM shapes (512 tokens, Llama-7B widths, 32000-word vocabulary).</summary>
[MemoryDiagnoser]
public class OpsBenchmarks
{
    private const int Tokens = 512, Dim = 4096, Hidden = 11008, Heads = 32, HeadDim = 128, Vocab = 32000, LossRows = 64;

    private Accelerator acc = null!;
    private Tensor x = null!, w = null!, y = null!, rstd = null!, dx = null!, dw = null!;
    private Tensor gate = null!, up = null!, h = null!, dGate = null!, dUp = null!;
    private Tensor qk = null!, logits = null!, lse = null!, dLogits = null!;
    private Tensor param = null!, grad = null!, m = null!, v = null!;
    private int[] positions = null!, targets = null!;
    private RopeTable table = null!;

    [Params(1, 2)] public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        acc = Accelerator.Create(AcceleratorKind.Cpu, Threads);
        var r = new Random(7);
        Tensor Rand(params int[] shape)
        {
            var t = acc.Allocate(shape);
            var s = t.Span;
            for (int i = 0; i < s.Length; i++) s[i] = (float)(r.NextDouble() * 2 - 1);
            return t;
        }
        x = Rand(Tokens, Dim); w = Rand(Dim); y = acc.Allocate(Tokens, Dim); rstd = acc.Allocate(Tokens);
        dx = acc.Allocate(Tokens, Dim); dw = acc.Allocate(Dim);
        gate = Rand(Tokens, Hidden); up = Rand(Tokens, Hidden); h = acc.Allocate(Tokens, Hidden);
        dGate = acc.Allocate(Tokens, Hidden); dUp = acc.Allocate(Tokens, Hidden);
        qk = Rand(Tokens, Heads, HeadDim);
        positions = Enumerable.Range(0, Tokens).ToArray();
        table = RopeTable.Create(HeadDim);
        logits = Rand(LossRows, Vocab); lse = acc.Allocate(LossRows); dLogits = acc.Allocate(LossRows, Vocab);
        targets = Enumerable.Range(0, LossRows).Select(i => (i * 7919) % Vocab).ToArray();
        param = Rand(Tokens, Dim); grad = Rand(Tokens, Dim); m = acc.Allocate(Tokens, Dim); v = acc.Allocate(Tokens, Dim);
        acc.Kernels.RmsNorm(x, w, y, rstd, 1e-5f);
    }

    [GlobalCleanup]
    public void Cleanup() => acc.Dispose();

    [Benchmark] public void RmsNorm() => acc.Kernels.RmsNorm(x, w, y, rstd, 1e-5f);
    [Benchmark] public void RmsNormBackward() => acc.Kernels.RmsNormBackward(x, w, rstd, y, dx, dw);
    [Benchmark] public void SwiGlu() => acc.Kernels.SwiGlu(gate, up, h);
    [Benchmark] public void SwiGluBackward() => acc.Kernels.SwiGluBackward(gate, up, h, dGate, dUp);
    [Benchmark] public void Softcap() => acc.Kernels.Softcap(gate, 30f, h);
    [Benchmark] public void SoftcapBackward() => acc.Kernels.SoftcapBackward(gate, 30f, up, dGate);
    [Benchmark] public void Rope() => acc.Kernels.Rope(qk, qk, positions, table);
    [Benchmark] public float CrossEntropy() => acc.Kernels.CrossEntropy(logits, targets, lse);
    [Benchmark] public void CrossEntropyBackward() => acc.Kernels.CrossEntropyBackward(logits, targets, lse, dLogits);
    [Benchmark] public void AdamW() => acc.Kernels.AdamW(param, grad, m, v, new AdamWStep(1e-4f, 1, WeightDecay: 0.1f));
}
