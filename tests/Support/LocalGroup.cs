using UioLlm.Kernels.Distributed;

namespace UioLlm.Tests.Support;

/// <summary>
/// N ranks as N threads of this process, for tests of distributed code without MPI. Collectives meet at a
/// barrier and read each other's posted buffers; sums add in rank order, so every rank gets the same bits.
/// </summary>
public sealed class LocalGroup
{
    private readonly Barrier barrier;
    private readonly object?[] posted;

    private LocalGroup(int size)
    {
        barrier = new Barrier(size);
        posted = new object?[size];
    }

    /// <summary>Runs <paramref name="body"/> on <paramref name="size"/> ranks at once and returns their results in rank order.</summary>
    public static T[] Run<T>(int size, Func<ICommunicator, T> body)
    {
        var group = new LocalGroup(size);
        var results = new T[size];
        var errors = new Exception?[size];
        var threads = Enumerable.Range(0, size).Select(rank => new Thread(() =>
        {
            try
            {
                results[rank] = body(new Member(group, rank));
            }
            catch (Exception e)
            {
                errors[rank] = e;
                group.barrier.Dispose();   // release the others instead of leaving them waiting
            }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        if (errors.FirstOrDefault(e => e is not null and not ObjectDisposedException and not BarrierPostPhaseException) is { } first)
            throw new AggregateException($"a rank failed: {first.Message}", first);
        if (errors.FirstOrDefault(e => e is not null) is { } any) throw new AggregateException(any.Message, any);
        return results;
    }

    private sealed class Member(LocalGroup group, int rank) : ICommunicator
    {
        public int Rank => rank;

        public int Size => group.posted.Length;

        public string Description => $"{Size} threads";

        public void AllReduceSum(Span<float> values) => Reduce(values);

        public void AllReduceSum(Span<double> values) => Reduce(values);

        public void AllGather(ReadOnlySpan<float> mine, Span<float> all) => Gather(mine, all);

        public void AllGather(ReadOnlySpan<double> mine, Span<double> all) => Gather(mine, all);

        public void Broadcast(Span<float> values, int root)
        {
            Post(values.ToArray());
            ((float[])group.posted[root]!).CopyTo(values);
            Barrier();
        }

        public void Barrier() => group.barrier.SignalAndWait();

        public void SendReceive(ReadOnlySpan<float> send, int destination, Span<float> receive, int source)
        {
            // Every rank posts what it sends; the receiver reads its source's post (a ring: all ranks call at once).
            Post((destination, send.ToArray()));
            var (to, data) = ((int, float[]))group.posted[source]!;
            if (to != rank) throw new InvalidOperationException($"rank {source} sent to {to}, but rank {rank} receives from it");
            if (data.Length != receive.Length) throw new InvalidOperationException($"rank {source} sent {data.Length} floats, rank {rank} expects {receive.Length}");
            data.CopyTo(receive);
            Barrier();
        }

        public void Abort(int exitCode) => throw new InvalidOperationException($"rank {rank} aborted the group with exit code {exitCode}");

        private void Post(object value)
        {
            group.posted[rank] = value;
            Barrier();
        }

        private void Reduce<T>(Span<T> values) where T : struct, System.Numerics.INumber<T>
        {
            Post(values.ToArray());
            var sum = new T[values.Length];
            for (int r = 0; r < Size; r++)
            {
                var part = (T[])group.posted[r]!;
                for (int i = 0; i < sum.Length; i++) sum[i] += part[i];
            }
            Barrier();
            sum.CopyTo(values);
        }

        private void Gather<T>(ReadOnlySpan<T> mine, Span<T> all)
        {
            if (all.Length != mine.Length * Size) throw new ArgumentException($"AllGather: the result must hold {Size} x {mine.Length} elements, got {all.Length}");
            Post(mine.ToArray());
            for (int r = 0; r < Size; r++) ((T[])group.posted[r]!).CopyTo(all.Slice(r * mine.Length));
            Barrier();
        }
    }
}
