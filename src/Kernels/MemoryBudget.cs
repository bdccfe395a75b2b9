namespace UioLlm.Kernels;

/// <summary>
/// Thrown before an allocation would take an accelerator past its <see cref="Accelerator.MemoryLimitBytes"/>:
/// nothing was allocated for the request, so the caller can stop cleanly instead of running out of memory.
/// </summary>
public sealed class MemoryBudgetExceededException(string message, long limitBytes, long inUseBytes, long requestedBytes)
    : InvalidOperationException(message)
{
    public long LimitBytes { get; } = limitBytes;
    public long InUseBytes { get; } = inUseBytes;
    public long RequestedBytes { get; } = requestedBytes;
}

/// <summary>Counts the bytes an accelerator holds (tensors, scratch, and host-side reservations such as a token cache) against an optional limit.</summary>
public sealed class MemoryBudget
{
    private long inUse, peak;

    /// <summary>The most bytes that may be held at once; 0 for no limit.</summary>
    public long LimitBytes { get; set; }

    /// <summary>Bytes held now.</summary>
    public long InUseBytes => Interlocked.Read(ref inUse);

    /// <summary>The most bytes held at once since the accelerator was created.</summary>
    public long PeakBytes => Interlocked.Read(ref peak);

    /// <summary>Counts <paramref name="bytes"/> more, or throws <see cref="MemoryBudgetExceededException"/> (counting nothing) when that would pass the limit.</summary>
    public void Take(long bytes, string what)
    {
        while (true)
        {
            long current = Interlocked.Read(ref inUse), next = current + bytes;
            long limit = LimitBytes;
            if (limit > 0 && next > limit)
                throw new MemoryBudgetExceededException(
                    $"the memory budget of {Mb(limit)} would be exceeded: {Mb(current)} in use, {what} needs {Mb(bytes)} more",
                    limit, current, bytes);
            if (Interlocked.CompareExchange(ref inUse, next, current) != current) continue;
            long p;
            while ((p = Interlocked.Read(ref peak)) < next && Interlocked.CompareExchange(ref peak, next, p) != p) { }
            return;
        }
    }

    /// <summary>Gives back bytes counted by <see cref="Take"/>.</summary>
    public void Give(long bytes) => Interlocked.Add(ref inUse, -bytes);

    /// <summary>Counts host memory held for as long as the returned object is not disposed (e.g. a token cache).</summary>
    public IDisposable Reserve(long bytes, string what)
    {
        Take(bytes, what);
        return new Reservation(this, bytes);
    }

    public static string Mb(long bytes) => $"{bytes / (1024.0 * 1024.0):0.#} MB";

    private sealed class Reservation(MemoryBudget budget, long bytes) : IDisposable
    {
        private int disposed;
        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0) budget.Give(bytes);
        }
    }
}
