using System.Collections.Concurrent;
using System.Numerics;

namespace UioLlm.Kernels;

/// <summary>
/// Pooled scratch memory: rented tensors come from power-of-two buckets and go back on Dispose, so
/// steady-state loops allocate nothing. Rented contents are not cleared unless asked.
/// </summary>
public sealed class ScratchPool
{
    private readonly Accelerator accelerator;
    private readonly ConcurrentBag<DeviceMemory>[] buckets = new ConcurrentBag<DeviceMemory>[32];
    private long bytesHeld;

    internal ScratchPool(Accelerator accelerator)
    {
        this.accelerator = accelerator;
        for (int i = 0; i < buckets.Length; i++) buckets[i] = new ConcurrentBag<DeviceMemory>();
    }

    /// <summary>Bytes currently parked in the pool (not rented out).</summary>
    public long BytesHeld => Interlocked.Read(ref bytesHeld);

    /// <summary>Rent a tensor of the given shape; dispose it to give the memory back.</summary>
    public Tensor Rent(ReadOnlySpan<int> shape, bool clear = false, string? name = null)
    {
        int[] s = shape.ToArray();
        int length = Tensor.ElementCount(s, name);
        int bucket = BucketOf(length);
        if (!buckets[bucket].TryTake(out var memory) || memory.IsDisposed)
            memory = accelerator.AllocateMemory(1 << bucket);
        else
            Interlocked.Add(ref bytesHeld, -4L * memory.Length);
        var t = new Tensor(memory, 0, s, name, ownsMemory: false, pool: this);
        if (clear) accelerator.Kernels.Fill(t, 0f);
        return t;
    }

    public Tensor Rent(params int[] shape) => Rent(shape.AsSpan());

    internal void Return(DeviceMemory memory)
    {
        if (memory.IsDisposed) return;
        Interlocked.Add(ref bytesHeld, 4L * memory.Length);
        buckets[BucketOf(memory.Length)].Add(memory);
    }

    /// <summary>Release every parked block.</summary>
    public void Trim()
    {
        foreach (var b in buckets)
            while (b.TryTake(out var m))
            {
                Interlocked.Add(ref bytesHeld, -4L * m.Length);
                m.Dispose();
            }
    }

    private static int BucketOf(int length) =>
        length <= 1 ? 0 : 32 - BitOperations.LeadingZeroCount((uint)(length - 1));
}
