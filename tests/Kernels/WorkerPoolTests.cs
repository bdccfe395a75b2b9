using UioLlm.Kernels.Cpu.Gemm;

namespace UioLlm.Tests.Kernels;

public class WorkerPoolTests
{
    private sealed class Recorder(int parts, int failingPart = -1) : IParallelWork
    {
        public readonly int[] Runs = new int[parts];

        public void Run(int part)
        {
            Interlocked.Increment(ref Runs[part]);
            if (part == failingPart) throw new InvalidOperationException($"part {part} failed");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    public void EveryPartRunsExactlyOnce(int parts)
    {
        for (int rep = 0; rep < 50; rep++)
        {
            var work = new Recorder(parts);
            WorkerPool.Run(work, parts);
            Assert.All(work.Runs, n => Assert.Equal(1, n));
        }
    }

    [Fact]
    public void FailureIsRethrownAfterAllPartsRan()
    {
        var work = new Recorder(4, failingPart: 2);
        var e = Assert.Throws<InvalidOperationException>(() => WorkerPool.Run(work, 4));
        Assert.Equal("part 2 failed", e.Message);
        Assert.All(work.Runs, n => Assert.Equal(1, n));
        // The pool is usable again afterwards.
        var next = new Recorder(3);
        WorkerPool.Run(next, 3);
        Assert.All(next.Runs, n => Assert.Equal(1, n));
    }

    private sealed class ThreadRecorder(int parts) : IParallelWork
    {
        public readonly int[] Threads = new int[parts];

        public void Run(int part)
        {
            Threads[part] = Environment.CurrentManagedThreadId;
            Thread.SpinWait(20_000);   // long enough that idle helpers would claim parts
        }
    }

    [Fact]
    public void ThisThreadOnlyRunsEveryRegionOnTheCallerUntilDisposed()
    {
        int me = Environment.CurrentManagedThreadId;
        var outer = UioLlm.Kernels.KernelThreads.ThisThreadOnly();
        var inner = UioLlm.Kernels.KernelThreads.ThisThreadOnly();
        var work = new ThreadRecorder(16);
        WorkerPool.Run(work, 16);
        Assert.All(work.Threads, t => Assert.Equal(me, t));
        inner.Dispose();
        inner.Dispose();   // twice: harmless, and the outer scope still holds
        work = new ThreadRecorder(16);
        WorkerPool.For(16, 16, p => work.Run(p));
        Assert.All(work.Threads, t => Assert.Equal(me, t));
        outer.Dispose();
        // Afterwards the pool is used again: every part still runs exactly once.
        var after = new Recorder(8);
        WorkerPool.Run(after, 8);
        Assert.All(after.Runs, n => Assert.Equal(1, n));
    }

    [Fact]
    public void AnInlineRegionAlsoRunsEveryPartBeforeRethrowing()
    {
        using var alone = UioLlm.Kernels.KernelThreads.ThisThreadOnly();
        var work = new Recorder(4, failingPart: 1);
        var e = Assert.Throws<InvalidOperationException>(() => WorkerPool.Run(work, 4));
        Assert.Equal("part 1 failed", e.Message);
        Assert.All(work.Runs, n => Assert.Equal(1, n));
    }

    [Fact]
    public void NestedRegionRunsInline()
    {
        var inner = new Recorder(3);
        var outer = new Nested(inner);
        WorkerPool.Run(outer, 2);
        Assert.All(inner.Runs, n => Assert.Equal(2, n));
    }

    private sealed class Nested(IParallelWork inner) : IParallelWork
    {
        public void Run(int part) => WorkerPool.Run(inner, 3);
    }

    [Theory]
    [InlineData(100, 2)]
    [InlineData(7, 3)]
    [InlineData(3, 1)]
    public void ForRunsEveryIndexOnceOnAtMostTheThreadsAsked(int count, int threads)
    {
        var runs = new int[count];
        var seen = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
        for (int rep = 0; rep < 20; rep++)
        {
            Array.Clear(runs);
            WorkerPool.For(count, threads, i =>
            {
                Interlocked.Increment(ref runs[i]);
                seen[Environment.CurrentManagedThreadId] = true;
                Thread.SpinWait(200);
            });
            Assert.All(runs, n => Assert.Equal(1, n));
        }
        Assert.InRange(seen.Count, 1, threads);
    }

    [Fact]
    public void ForRethrowsAFailureOfItsBody()
    {
        var e = Assert.Throws<InvalidOperationException>(() =>
            WorkerPool.For(10, 2, i => { if (i == 7) throw new InvalidOperationException("index 7"); }));
        Assert.Equal("index 7", e.Message);
        int total = 0;
        WorkerPool.For(10, 2, i => Interlocked.Add(ref total, i));
        Assert.Equal(45, total);
    }
}
