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

    public int Capacity { get; private set; }

    /// <summary>
    /// Leading rows that are not the model's own tokens (UIO's memory keys and values): every query sees
    /// them. 0 for a plain cache. Own tokens sit at positions PrefixLength onwards.
    /// </summary>
    public int PrefixLength { get; private set; }

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

    /// <summary>Forgets every stored token and the prefix (buffers are reused).</summary>
    public void Clear() => Length = PrefixLength = 0;

    /// <summary>Drops the own tokens after the prefix (UIO: the local window after a compression).</summary>
    public void DropLocal() => Length = PrefixLength;

    /// <summary>
    /// Marks <paramref name="rows"/> rows written after the prefix as prefix too; only when no own token is
    /// stored (call <see cref="DropLocal"/> first).
    /// </summary>
    public void ExtendPrefix(int rows)
    {
        if (Length != PrefixLength)
            throw new InvalidOperationException($"KV cache: cannot extend the prefix while {Length - PrefixLength} own tokens are stored");
        if (rows < 0 || PrefixLength + rows > Capacity)
            throw new ArgumentOutOfRangeException(nameof(rows), $"KV cache: prefix of {PrefixLength} + {rows} rows does not fit capacity {Capacity}");
        PrefixLength += rows;
        Length = PrefixLength;
    }

    /// <summary>Removes the first <paramref name="rows"/> prefix rows, moving the rest up (no own tokens may be stored).</summary>
    public void RemovePrefix(int rows)
    {
        if (Length != PrefixLength)
            throw new InvalidOperationException($"KV cache: cannot remove prefix rows while {Length - PrefixLength} own tokens are stored");
        if (rows < 0 || rows > PrefixLength)
            throw new ArgumentOutOfRangeException(nameof(rows), $"KV cache: cannot remove {rows} of {PrefixLength} prefix rows");
        int keep = PrefixLength - rows;
        for (int l = 0; l < keys.Length; l++)
        {
            TensorRows.Move(keys[l], rows, 0, keep);
            TensorRows.Move(values[l], rows, 0, keep);
        }
        PrefixLength = Length = keep;
    }

    /// <summary>Grows every buffer to hold at least <paramref name="capacity"/> rows, keeping what is stored.</summary>
    public void EnsureCapacity(int capacity)
    {
        if (capacity <= Capacity) return;
        int grown = Math.Max(capacity, Capacity * 2);
        for (int l = 0; l < keys.Length; l++)
        {
            keys[l] = TensorRows.Grow(keys[l], grown, Length);
            values[l] = TensorRows.Grow(values[l], grown, Length);
        }
        Capacity = grown;
    }

    /// <summary>Bytes held by the stored rows (keys and values of every layer).</summary>
    public long StoredBytes => 2L * keys.Length * Length * (keys[0].Length / Capacity) * sizeof(float);

    /// <summary>Bytes allocated (the capacity of every layer's key and value buffers).</summary>
    public long AllocatedBytes => 2L * keys.Length * keys[0].Length * sizeof(float);

    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
