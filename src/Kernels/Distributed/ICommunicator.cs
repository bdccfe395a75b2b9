namespace UioLlm.Kernels.Distributed;

/// <summary>
/// The few collective and point-to-point operations that data-parallel training and ring attention need, over
/// host buffers. Every process of the group calls the collectives in the same order with the same sizes.
/// <see cref="MpiCommunicator"/> is the real one (MPI's world communicator); <see cref="SingleProcessCommunicator"/>
/// is the group of one, so the distributed code paths also run, unchanged, in a plain process.
/// </summary>
public interface ICommunicator
{
    /// <summary>This process's index in the group, 0 .. <see cref="Size"/> - 1.</summary>
    int Rank { get; }

    /// <summary>Number of processes in the group.</summary>
    int Size { get; }

    /// <summary>What the group runs on, for logs (e.g. "Open MPI v4.1.4, 2 ranks").</summary>
    string Description { get; }

    /// <summary>Element-wise sum over all processes, in place; every process gets the same result.</summary>
    void AllReduceSum(Span<float> values);

    /// <inheritdoc cref="AllReduceSum(Span{float})"/>
    void AllReduceSum(Span<double> values);

    /// <summary>Concatenates every process's <paramref name="mine"/> (all of one length) in rank order into <paramref name="all"/> (Size times as long).</summary>
    void AllGather(ReadOnlySpan<float> mine, Span<float> all);

    /// <inheritdoc cref="AllGather(ReadOnlySpan{float}, Span{float})"/>
    void AllGather(ReadOnlySpan<double> mine, Span<double> all);

    /// <summary>Copies <paramref name="values"/> of process <paramref name="root"/> to every process.</summary>
    void Broadcast(Span<float> values, int root);

    /// <summary>Returns once every process has called it.</summary>
    void Barrier();

    /// <summary>Sends <paramref name="send"/> to <paramref name="destination"/> while receiving <paramref name="receive"/> from <paramref name="source"/> (no deadlock in a ring).</summary>
    void SendReceive(ReadOnlySpan<float> send, int destination, Span<float> receive, int source);

    /// <summary>Ends every process of the group with <paramref name="exitCode"/> (after an error on one of them, so the others do not wait forever).</summary>
    void Abort(int exitCode);
}

/// <summary>The group of one process: collectives are copies, nothing is sent.</summary>
public sealed class SingleProcessCommunicator : ICommunicator
{
    public static SingleProcessCommunicator Instance { get; } = new();

    public int Rank => 0;

    public int Size => 1;

    public string Description => "single process";

    public void AllReduceSum(Span<float> values) { }

    public void AllReduceSum(Span<double> values) { }

    public void AllGather(ReadOnlySpan<float> mine, Span<float> all) => Gather(mine, all);

    public void AllGather(ReadOnlySpan<double> mine, Span<double> all) => Gather(mine, all);

    public void Broadcast(Span<float> values, int root) => CheckRank(root, nameof(root));

    public void Barrier() { }

    public void SendReceive(ReadOnlySpan<float> send, int destination, Span<float> receive, int source)
    {
        CheckRank(destination, nameof(destination));
        CheckRank(source, nameof(source));
        if (send.Length != receive.Length)
            throw new ArgumentException($"SendReceive: a single process sends to itself, so send ({send.Length}) and receive ({receive.Length}) must have one length");
        send.CopyTo(receive);
    }

    public void Abort(int exitCode) => Environment.Exit(exitCode);

    private static void Gather<T>(ReadOnlySpan<T> mine, Span<T> all)
    {
        if (all.Length != mine.Length)
            throw new ArgumentException($"AllGather: the result must hold 1 x {mine.Length} elements, got {all.Length}");
        mine.CopyTo(all);
    }

    private static void CheckRank(int rank, string name)
    {
        if (rank != 0) throw new ArgumentOutOfRangeException(name, rank, "a single-process group has only rank 0");
    }
}
