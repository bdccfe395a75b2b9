namespace UioLlm.Fuzz;

/// <summary>How one input ended.</summary>
public enum Outcome { Accepted, TypedError, Untyped, Hang, MemoryBlowUp }

/// <summary>The result of one watched call: the outcome, the exception (if any) and the bytes the call allocated.</summary>
public readonly record struct WatchedResult(Outcome Outcome, Exception? Exception, long AllocatedBytes, TimeSpan Elapsed);

/// <summary>
/// Runs each input on a dedicated worker thread with a time limit and a memory limit. The memory limit counts
/// the bytes the worker thread allocated during the call (an allocation of a huge array counts even when the
/// parser rejects the input afterwards); an <see cref="OutOfMemoryException"/> is a blow-up too. A call that
/// overruns its time is reported as a hang and its thread is abandoned (a fresh worker takes the next input).
/// </summary>
public sealed class Watchdog : IDisposable
{
    private readonly TimeSpan timeLimit;
    private readonly long memoryLimit;
    private readonly Func<Exception, bool> isTyped;
    private Worker worker;

    public Watchdog(TimeSpan timeLimit, long memoryLimitBytes, Func<Exception, bool> isTyped)
    {
        this.timeLimit = timeLimit;
        memoryLimit = memoryLimitBytes;
        this.isTyped = isTyped;
        worker = new Worker();
    }

    public int AbandonedThreads { get; private set; }

    public WatchedResult Run(Action action)
    {
        var started = DateTime.UtcNow;
        var cpuBefore = ProcessCpu();
        worker.Start(action);
        // A hang is an input that keeps the CPU busy past the limit. On a loaded machine (the fuzzer runs at low
        // priority beside builds) a normal parse can wait far longer than that for a core, so past the time
        // limit the process's CPU time decides; the wall clock gives up only at 20 times the limit.
        bool done = worker.Done.Wait(timeLimit);
        while (!done && ProcessCpu() - cpuBefore < timeLimit && DateTime.UtcNow - started < 20 * timeLimit)
            done = worker.Done.Wait(TimeSpan.FromMilliseconds(250));
        if (!done)
        {
            AbandonedThreads++;
            worker = new Worker();
            return new WatchedResult(Outcome.Hang, null, 0, DateTime.UtcNow - started);
        }
        var (error, allocated) = worker.Take();
        var elapsed = DateTime.UtcNow - started;
        if (error is OutOfMemoryException || error is InsufficientMemoryException || allocated > memoryLimit)
            return new WatchedResult(Outcome.MemoryBlowUp, error, allocated, elapsed);
        if (error is null) return new WatchedResult(Outcome.Accepted, null, allocated, elapsed);
        return new WatchedResult(isTyped(error) ? Outcome.TypedError : Outcome.Untyped, error, allocated, elapsed);
    }

    public void Dispose() => worker.Stop();

    private static TimeSpan ProcessCpu()
    {
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        return process.TotalProcessorTime;
    }

    private sealed class Worker
    {
        private readonly SemaphoreSlim go = new(0);
        private Action? action;
        private Exception? error;
        private long allocated;
        private volatile bool stop;

        public Worker()
        {
            var thread = new Thread(Loop, maxStackSize: 16 * 1024 * 1024) { IsBackground = true, Name = "fuzz worker" };
            thread.Start();
        }

        public ManualResetEventSlim Done { get; } = new(false);

        public void Start(Action work)
        {
            action = work;
            Done.Reset();
            go.Release();
        }

        public (Exception?, long) Take() => (error, allocated);

        public void Stop()
        {
            stop = true;
            go.Release();
        }

        private void Loop()
        {
            while (true)
            {
                go.Wait();
                if (stop) return;
                long before = GC.GetAllocatedBytesForCurrentThread();
                error = null;
                try
                {
                    action!();
                }
                catch (Exception e)
                {
                    error = e;
                }
                allocated = GC.GetAllocatedBytesForCurrentThread() - before;
                Done.Set();
            }
        }
    }
}
