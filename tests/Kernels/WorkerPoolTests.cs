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
}
