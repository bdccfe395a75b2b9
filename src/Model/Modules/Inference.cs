using UioLlm.Kernels;

namespace UioLlm.Model.Modules;

/// <summary>
/// Preallocated activations for tape-free inference of up to <see cref="Rows"/> tokens per pass. Decoding
/// runs the same math as the tape ops, straight on these buffers: no graph, no per-op allocation, so a
/// token of a tiny model costs microseconds, not the bookkeeping of a differentiable graph.
/// </summary>
public sealed class InferenceBuffers : IDisposable
{
    private readonly List<Tensor> owned = [];

    public InferenceBuffers(LlamaConfig config, Accelerator accelerator, int rows = 64)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(accelerator);
        if (rows <= 0) throw new ArgumentOutOfRangeException(nameof(rows), $"InferenceBuffers: rows must be positive, got {rows}");
        Rows = rows;
        Tensor T(string name, params int[] shape)
        {
            var t = accelerator.Allocate(shape, name);
            owned.Add(t);
            return t;
        }
        int d = config.Dim, q = config.Heads * config.HeadDim;
        X = T("infer.x", rows, d);
        Normed = T("infer.normed", rows, d);
        Q = T("infer.q", rows, q);
        K = T("infer.k", rows, config.KvDim);
        V = T("infer.v", rows, config.KvDim);
        Attended = T("infer.attended", rows, q);
        Delta = T("infer.delta", rows, d);
        Gate = T("infer.gate", rows, config.HiddenDim);
        Up = T("infer.up", rows, config.HiddenDim);
        Lse = T("infer.lse", config.Heads * rows);
        Rstd = T("infer.rstd", rows);
        Logits = T("infer.logits", 1, config.VocabSize);
    }

    /// <summary>Most tokens one pass takes (longer inputs are processed in chunks).</summary>
    public int Rows { get; }
    internal Tensor X { get; }
    internal Tensor Normed { get; }
    internal Tensor Q { get; }
    internal Tensor K { get; }
    internal Tensor V { get; }
    internal Tensor Attended { get; }
    internal Tensor Delta { get; }
    internal Tensor Gate { get; }
    internal Tensor Up { get; }
    internal Tensor Lse { get; }
    internal Tensor Rstd { get; }
    /// <summary>[1, vocab]: the logits of the last token of the latest pass.</summary>
    public Tensor Logits { get; }

    /// <summary>Scratch for a LoRA adapter's x A^T, rented per call (adapters are rare at inference).</summary>
    internal static Tensor LoraScratch(Accelerator accelerator, int rows, int rank) => accelerator.Scratch.Rent([rows, rank]);

    public void Dispose()
    {
        foreach (var t in owned) t.Dispose();
    }
}

public sealed partial class Linear
{
    /// <summary>y = x W^T (+ the adapter's update) (+ the bias) on plain tensors, outside any tape.</summary>
    internal void Apply(IKernels kernels, Tensor x, Tensor y)
    {
        if (Adapter is null)
        {
            // One token on the CPU with the weight kept quantised: read the blocks, not the float32 copy.
            if (Quantized is { } q && x.Dim(0) == 1 && x.Accelerator is UioLlm.Kernels.Cpu.CpuAccelerator cpu)
                q.MatVec(x.Span, y.Span, 1, cpu.Threads);
            else
                kernels.MatMul(x, Weight.Value, y, transB: true);
        }
        else
        {
            using var xa = InferenceBuffers.LoraScratch(x.Accelerator, x.Dim(0), Adapter.Rank);
            kernels.LoraMatMul(x, Weight.Value, Adapter.A.Value, Adapter.B.Value, Adapter.Scale, y, xa);
        }
        if (Bias is { } bias)
        {
            var b = bias.Value.View(1, y.Dim(1));
            for (int t = 0; t < y.Dim(0); t++) kernels.Add(y.Slice(t, 1), b, y.Slice(t, 1));
        }
    }
}

public sealed partial class Attention
{
    /// <summary>Tape-free attention of the T rows of buffers.Normed, appended to the cache; writes buffers.Delta.</summary>
    internal void Infer(IKernels k, InferenceBuffers b, int tokens, ReadOnlySpan<int> positions, KvCache cache)
    {
        int start = cache.Length;
        var x = b.Normed.Slice(0, tokens);
        var q = b.Q.Slice(0, tokens);
        var key = b.K.Slice(0, tokens);
        var value = b.V.Slice(0, tokens);
        Q.Apply(k, x, q);
        K.Apply(k, x, key);
        V.Apply(k, x, value);
        var q3 = q.View(tokens, Heads, HeadDim);
        k.Rope(q3, q3, positions, Rope);
        // Rotated keys and the values go straight into the cache rows of these tokens.
        k.Rope(key.View(tokens, KvHeads, HeadDim), cache.Keys(Layer).Slice(start, tokens), positions, Rope);
        k.Copy(value, cache.Values(Layer).Slice(start, tokens));
        var attended = b.Attended.Slice(0, tokens);
        k.Attention(q3, cache.Keys(Layer).Slice(0, start + tokens), cache.Values(Layer).Slice(0, start + tokens),
            attended.View(tokens, Heads, HeadDim), b.Lse.Slice(0, Heads * tokens).View(Heads, tokens),
            Config.DecoderMask(Layer, prefixLength: cache.PrefixLength));
        O.Apply(k, attended, b.Delta.Slice(0, tokens));
    }
}

public sealed partial class Mlp
{
    /// <summary>Tape-free SwiGLU of the T rows of buffers.Normed into buffers.Delta.</summary>
    internal void Infer(IKernels k, InferenceBuffers b, int tokens)
    {
        var x = b.Normed.Slice(0, tokens);
        var gate = b.Gate.Slice(0, tokens);
        var up = b.Up.Slice(0, tokens);
        Gate.Apply(k, x, gate);
        Up.Apply(k, x, up);
        k.SwiGlu(gate, up, gate);
        Down.Apply(k, gate, b.Delta.Slice(0, tokens));
    }
}

public sealed partial class LlamaBlock
{
    /// <summary>Tape-free pre-norm layer over the T rows of buffers.X, in place.</summary>
    internal void Infer(IKernels k, InferenceBuffers b, int tokens, ReadOnlySpan<int> positions, KvCache cache)
    {
        var x = b.X.Slice(0, tokens);
        var normed = b.Normed.Slice(0, tokens);
        var rstd = b.Rstd.Slice(0, tokens);
        var delta = b.Delta.Slice(0, tokens);
        k.RmsNorm(x, AttentionNorm.Weight.Value, normed, rstd, AttentionNorm.Eps);
        Attention.Infer(k, b, tokens, positions, cache);
        k.Add(x, delta, x);
        k.RmsNorm(x, FfnNorm.Weight.Value, normed, rstd, FfnNorm.Eps);
        Mlp.Infer(k, b, tokens);
        k.Add(x, delta, x);
    }
}
