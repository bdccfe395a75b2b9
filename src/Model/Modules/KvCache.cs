using UioLlm.Kernels;

namespace UioLlm.Model.Modules;

/// <summary>
/// Keys and values of the tokens seen so far, per layer: [capacity, kv_heads, head_dim] each, filled from
/// row 0. Inference only: values written here carry no gradient.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] keys;
    private readonly Tensor[] values;

    public KvCache(Accelerator accelerator, int layers, int capacity, int kvHeads, int headDim)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        if (layers <= 0) throw new ArgumentOutOfRangeException(nameof(layers), $"KV cache: layers must be positive, got {layers}");
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), $"KV cache: capacity must be positive, got {capacity}");
        Capacity = capacity;
        keys = new Tensor[layers];
        values = new Tensor[layers];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = accelerator.Allocate([capacity, kvHeads, headDim], $"cache.{l}.k");
            values[l] = accelerator.Allocate([capacity, kvHeads, headDim], $"cache.{l}.v");
        }
    }

    /// <summary>Tokens stored (the position of the next token).</summary>
    public int Length { get; private set; }

    public int Capacity { get; }

    public int Layers => keys.Length;

    /// <summary>The whole key buffer of a layer; rows [0, Length) are filled.</summary>
    public Tensor Keys(int layer) => keys[layer];

    public Tensor Values(int layer) => values[layer];

    /// <summary>Checks that <paramref name="tokens"/> more fit; throws naming the capacity otherwise.</summary>
    public void EnsureRoom(int tokens)
    {
        if (Length + tokens > Capacity)
            throw new InvalidOperationException($"KV cache is full: {Length} tokens stored + {tokens} new > capacity {Capacity}");
    }

    /// <summary>Marks <paramref name="tokens"/> more rows as filled (after every layer wrote them).</summary>
    public void Advance(int tokens)
    {
        EnsureRoom(tokens);
        Length += tokens;
    }

    /// <summary>Forgets every stored token (buffers are reused).</summary>
    public void Clear() => Length = 0;

    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
