using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>Work divided into independent parts; <see cref="Run"/> is called once for every part in [0, parts).</summary>
internal interface IParallelWork
{
    void Run(int part);
}

/// <summary>
/// Persistent helper threads for the GEMM: one parallel region per call, no allocation, low wake-up latency.
/// The caller takes part in the work; helpers spin briefly on a generation counter after each region (so
/// back-to-back calls find them awake), then block. Parts are claimed dynamically, so a helper that wakes
/// late simply leaves more parts to the others. A region started while another is running (another thread
/// multiplying at the same time, or a nested call) runs inline on its caller instead.
/// </summary>
internal static class WorkerPool
{
    /// <summary>How long an idle helper keeps polling for the next region before it blocks.</summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 10_000; // 100 us

    private static readonly object Gate = new();   // held by the caller for a whole region
    private static readonly object Sleep = new();  // guards the blocking wait of idle helpers
    private static int helpers;

    // The current region, published before generation is bumped.
    private static IParallelWork? work;
    private static int parts, active;
    private static int next;     // next unclaimed part
    private static int pending;  // active helpers not yet done with this region
    private static long generation;
    private static int sleepers;
    private static Exception? failure;

    [ThreadStatic] private static bool inRegion;

    /// <summary>Every region started on this thread runs inline until the scope is disposed (see <see cref="KernelThreads.ThisThreadOnly"/>).</summary>
    public static IDisposable Inline()
    {
        bool was = inRegion;
        inRegion = true;
        return new InlineScope(was);
    }

    private sealed class InlineScope(bool was) : IDisposable
    {
        private bool disposed;

        public void Dispose()
        {
            if (disposed) return;
            disposed = true;
            inRegion = was;
        }
    }

    /// <summary>
    /// Runs work.Run(p) for p in [0, partCount) on up to <paramref name="maxThreads"/> threads (default: one per
    /// part), the caller included; rethrows the first failure.
    /// </summary>
    public static void Run(IParallelWork region, int partCount, int maxThreads = int.MaxValue)
    {
        int threads = Math.Min(partCount, maxThreads);
        if (threads <= 1 || inRegion || !Monitor.TryEnter(Gate))
        {
            // Inline: the same contract as a pooled region (every part runs, the first failure is rethrown after).
            Exception? first = null;
            for (int p = 0; p < partCount; p++)
            {
                try
                {
                    region.Run(p);
                }
                catch (Exception e)
                {
                    first ??= e;
                }
            }
            if (first is not null) ExceptionDispatchInfo.Capture(first).Throw();
            return;
        }
        inRegion = true;
        try
        {
            while (helpers < threads - 1) StartHelper(helpers++, generation);
            work = region;
            parts = partCount;
            active = threads - 1;
            next = 0;
            pending = active;
            failure = null;
            lock (Sleep)
            {
                generation++;
                if (sleepers > 0) Monitor.PulseAll(Sleep);
            }
            Claim();
            // Helpers may still be finishing their last part.
            var spin = new SpinWait();
            while (Volatile.Read(ref pending) != 0) spin.SpinOnce(sleep1Threshold: -1);
            work = null;
            if (failure is { } e) ExceptionDispatchInfo.Throw(e);
        }
        finally
        {
            inRegion = false;
            Monitor.Exit(Gate);
        }
    }

    /// <summary>
    /// body(i) for i in [0, count) on up to <paramref name="maxThreads"/> threads: the same helpers as the GEMM,
    /// so one op's workers never compete for the cores with another's still-spinning ones (as a second pool would).
    /// </summary>
    public static void For(int count, int maxThreads, Action<int> body)
    {
        if (count <= 0) return;
        if (count == 1 || maxThreads <= 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        var region = DelegateRegion.Current;
        region.Body = body;
        try
        {
            Run(region, count, maxThreads);
        }
        finally
        {
            region.Body = null;
        }
    }

    /// <summary>A delegate as a region, reused per calling thread (a nested call runs inline, so reuse is safe).</summary>
    private sealed class DelegateRegion : IParallelWork
    {
        [ThreadStatic] private static DelegateRegion? current;

        public Action<int>? Body;

        public static DelegateRegion Current => current is { Body: null } r ? r : current = new DelegateRegion();

        public void Run(int part) => Body!(part);
    }

    /// <summary>Runs parts until none is left; a failure is recorded (the first one wins) and stops nothing else.</summary>
    private static void Claim()
    {
        var region = work!;
        int count = parts;
        for (int p; (p = Interlocked.Increment(ref next) - 1) < count;)
        {
            try
            {
                region.Run(p);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref failure, e, null);
            }
        }
    }

    /// <summary>A new helper waits for the generation after <paramref name="seen"/> (the region about to start).</summary>
    private static void StartHelper(int index, long seen)
    {
        var thread = new Thread(() => HelperLoop(index, seen)) { IsBackground = true, Name = $"UioLlm GEMM helper {index + 1}" };
        thread.Start();
    }

    private static void HelperLoop(int index, long seen)
    {
        inRegion = true;
        while (true)
        {
            // Poll for a new region for a short while, then block until the next one is published.
            long start = Stopwatch.GetTimestamp();
            while (Volatile.Read(ref generation) == seen)
            {
                if (Stopwatch.GetTimestamp() - start < SpinTicks)
                {
                    Thread.SpinWait(20);
                    continue;
                }
                lock (Sleep)
                {
                    sleepers++;
                    while (generation == seen) Monitor.Wait(Sleep);
                    sleepers--;
                }
            }
            seen = Volatile.Read(ref generation);
            if (index < active)
            {
                Claim();
                Interlocked.Decrement(ref pending);
            }
        }
    }
}
