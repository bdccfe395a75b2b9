using System.Runtime.InteropServices;
using System.Text;

namespace UioLlm.Kernels.Distributed;

/// <summary>Why MPI cannot be used (library missing, not Open MPI, initialisation failed); the message says which.</summary>
public sealed class MpiUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// MPI's world communicator through our own bindings: libmpi is opened at run time (no package, nothing linked at
/// build time) and called through function pointers. Supported: Open MPI 4.x and 5.x (Debian's libopenmpi3 is
/// 4.1), whose handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are the addresses of exported objects such as
/// <c>ompi_mpi_comm_world</c>. MPICH and its derivatives (Intel MPI, MVAPICH, Cray MPICH) use integer handles
/// instead; they are refused with a message that says so. The library is looked for at <c>UIOLLM_LIBMPI</c>,
/// then <c>libmpi.so.40</c> and <c>libmpi.so</c> on the loader path; it is opened with RTLD_GLOBAL because Open
/// MPI's plug-ins resolve libmpi's symbols from the global scope.
/// MPI is initialised with MPI_THREAD_FUNNELED: only the thread that calls <see cref="InitWorld"/> may call in
/// (the kernels' worker threads never do).
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator, IDisposable
{
    private const int ThreadFunneled = 1;   // Open MPI's MPI_THREAD_FUNNELED
    private const int MaxName = 256;        // Open MPI's MPI_MAX_PROCESSOR_NAME and MPI_MAX_LIBRARY_VERSION_STRING
    private const int Chunk = 1 << 28;      // elements per call: MPI counts are C ints
    private static readonly nint InPlace = 1; // Open MPI's MPI_IN_PLACE

    private static MpiCommunicator? world;

    private readonly nint commWorld, mpiFloat, mpiDouble, opSum;
    private readonly delegate* unmanaged<nint, nint, int, nint, nint, nint, int> allreduce;
    private readonly delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int> allgather;
    private readonly delegate* unmanaged<nint, int, nint, int, nint, int> bcast;
    private readonly delegate* unmanaged<nint, int> barrier;
    private readonly delegate* unmanaged<nint, int, nint, int, int, nint, int, nint, int, int, nint, nint, int> sendrecv;
    private readonly delegate* unmanaged<nint, int, int> abort;
    private readonly delegate* unmanaged<int> finalize;
    private bool finalized;

    private MpiCommunicator(nint lib, string path)
    {
        nint Export(string name) => NativeLibrary.TryGetExport(lib, name, out nint address)
            ? address
            : throw new MpiUnavailableException($"{path}: symbol '{name}' is missing; is this Open MPI 4 or newer?");

        if (!NativeLibrary.TryGetExport(lib, "ompi_mpi_comm_world", out commWorld))
            throw new MpiUnavailableException($"{path} is not Open MPI (no 'ompi_mpi_comm_world'): MPICH-family libraries use integer handles, which these bindings do not support; install Open MPI (Debian: openmpi-bin libopenmpi-dev) or point UIOLLM_LIBMPI at an Open MPI libmpi.so");
        mpiFloat = Export("ompi_mpi_float");
        mpiDouble = Export("ompi_mpi_double");
        opSum = Export("ompi_mpi_op_sum");
        allreduce = (delegate* unmanaged<nint, nint, int, nint, nint, nint, int>)Export("MPI_Allreduce");
        allgather = (delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int>)Export("MPI_Allgather");
        bcast = (delegate* unmanaged<nint, int, nint, int, nint, int>)Export("MPI_Bcast");
        barrier = (delegate* unmanaged<nint, int>)Export("MPI_Barrier");
        sendrecv = (delegate* unmanaged<nint, int, nint, int, int, nint, int, nint, int, int, nint, nint, int>)Export("MPI_Sendrecv");
        abort = (delegate* unmanaged<nint, int, int>)Export("MPI_Abort");
        finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        var initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        var initThread = (delegate* unmanaged<int*, nint, int, int*, int>)Export("MPI_Init_thread");
        var commRank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank");
        var commSize = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size");
        var processorName = (delegate* unmanaged<byte*, int*, int>)Export("MPI_Get_processor_name");
        var libraryVersion = (delegate* unmanaged<byte*, int*, int>)Export("MPI_Get_library_version");

        int flag = 0, provided = 0, rank = 0, size = 0;
        Check(initialized(&flag), "MPI_Initialized");
        if (flag == 0) Check(initThread(null, 0, ThreadFunneled, &provided), "MPI_Init_thread");
        Check(commRank(commWorld, &rank), "MPI_Comm_rank");
        Check(commSize(commWorld, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        byte* buffer = stackalloc byte[MaxName + 1];
        int length = 0;
        Check(processorName(buffer, &length), "MPI_Get_processor_name");
        Host = Encoding.UTF8.GetString(buffer, Math.Clamp(length, 0, MaxName));
        Check(libraryVersion(buffer, &length), "MPI_Get_library_version");
        string version = Encoding.UTF8.GetString(buffer, Math.Clamp(length, 0, MaxName)).Trim('\0', ' ', '\n');
        int comma = version.IndexOf(',');
        LibraryVersion = comma > 0 ? version[..comma] : version;
        LibraryPath = path;
    }

    public int Rank { get; }

    public int Size { get; }

    /// <summary>This process's host name as MPI reports it.</summary>
    public string Host { get; }

    /// <summary>The MPI library's own version line (e.g. "Open MPI v4.1.4").</summary>
    public string LibraryVersion { get; }

    public string LibraryPath { get; }

    public string Description => $"{LibraryVersion}, {Size} rank(s), rank {Rank} on {Host}";

    /// <summary>True when this process was started by an MPI launcher (mpirun, mpiexec, srun with PMIx).</summary>
    public static bool LaunchedByMpi =>
        Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null
        || Environment.GetEnvironmentVariable("PMIX_RANK") is not null
        || Environment.GetEnvironmentVariable("PMI_SIZE") is not null;

    /// <summary>
    /// Opens libmpi and initialises MPI once per process (later calls return the same communicator).
    /// </summary>
    /// <exception cref="MpiUnavailableException">No usable Open MPI library, or MPI_Init failed.</exception>
    public static MpiCommunicator InitWorld()
    {
        if (world is { } existing) return existing;
        var (lib, path) = Open();
        world = new MpiCommunicator(lib, path);
        return world;
    }

    /// <summary>Why MPI cannot be opened here, or null when the library loads (it is not initialised by this check).</summary>
    public static string? UnavailableReason()
    {
        try
        {
            var (lib, path) = Open();
            return NativeLibrary.TryGetExport(lib, "ompi_mpi_comm_world", out _) ? null : $"{path} is not Open MPI";
        }
        catch (MpiUnavailableException e)
        {
            return e.Message;
        }
    }

    public void AllReduceSum(Span<float> values)
    {
        fixed (float* p = values)
            for (int start = 0; start < values.Length; start += Chunk)
                Check(allreduce(InPlace, (nint)(p + start), Math.Min(Chunk, values.Length - start), mpiFloat, opSum, commWorld), "MPI_Allreduce");
    }

    public void AllReduceSum(Span<double> values)
    {
        fixed (double* p = values)
            for (int start = 0; start < values.Length; start += Chunk)
                Check(allreduce(InPlace, (nint)(p + start), Math.Min(Chunk, values.Length - start), mpiDouble, opSum, commWorld), "MPI_Allreduce");
    }

    public void AllGather(ReadOnlySpan<float> mine, Span<float> all)
    {
        CheckGather(mine.Length, all.Length);
        if (mine.Length == 0) return;
        fixed (float* s = mine)
        fixed (float* r = all)
            Check(allgather((nint)s, mine.Length, mpiFloat, (nint)r, mine.Length, mpiFloat, commWorld), "MPI_Allgather");
    }

    public void AllGather(ReadOnlySpan<double> mine, Span<double> all)
    {
        CheckGather(mine.Length, all.Length);
        if (mine.Length == 0) return;
        fixed (double* s = mine)
        fixed (double* r = all)
            Check(allgather((nint)s, mine.Length, mpiDouble, (nint)r, mine.Length, mpiDouble, commWorld), "MPI_Allgather");
    }

    public void Broadcast(Span<float> values, int root)
    {
        CheckRank(root, nameof(root));
        fixed (float* p = values)
            for (int start = 0; start < values.Length; start += Chunk)
                Check(bcast((nint)(p + start), Math.Min(Chunk, values.Length - start), mpiFloat, root, commWorld), "MPI_Bcast");
    }

    public void Barrier() => Check(barrier(commWorld), "MPI_Barrier");

    public void SendReceive(ReadOnlySpan<float> send, int destination, Span<float> receive, int source)
    {
        CheckRank(destination, nameof(destination));
        CheckRank(source, nameof(source));
        fixed (float* s = send)
        fixed (float* r = receive)
        {
            int sent = 0, received = 0, tag = 0;
            while (sent < send.Length || received < receive.Length)
            {
                int sc = Math.Min(Chunk, send.Length - sent), rc = Math.Min(Chunk, receive.Length - received);
                Check(sendrecv((nint)(s + sent), sc, mpiFloat, destination, tag, (nint)(r + received), rc, mpiFloat, source, tag, commWorld, 0), "MPI_Sendrecv");
                sent += sc;
                received += rc;
                tag++;
            }
        }
    }

    public void Abort(int exitCode)
    {
        abort(commWorld, exitCode);
        Environment.Exit(exitCode);
    }

    /// <summary>MPI_Finalize (once; every rank must call it before exiting normally).</summary>
    public void Dispose()
    {
        if (finalized) return;
        finalized = true;
        Check(finalize(), "MPI_Finalize");
    }

    private static (nint Handle, string Path) Open()
    {
        string? custom = Environment.GetEnvironmentVariable("UIOLLM_LIBMPI");
        string[] candidates = string.IsNullOrEmpty(custom) ? ["libmpi.so.40", "libmpi.so"] : [custom];
        var errors = new List<string>();
        foreach (string candidate in candidates)
        {
            nint handle = dlopen(candidate, RtldNow | RtldGlobal);
            if (handle != 0) return (handle, candidate);
            errors.Add(Marshal.PtrToStringUTF8(dlerror()) ?? candidate);
        }
        throw new MpiUnavailableException($"no MPI library: could not load {string.Join(" or ", candidates)} ({string.Join("; ", errors)}); install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev) or set UIOLLM_LIBMPI");
    }

    private const int RtldNow = 2, RtldGlobal = 0x100;

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern nint dlopen([MarshalAs(UnmanagedType.LPUTF8Str)] string file, int mode);

    [DllImport("libc", EntryPoint = "dlerror")]
    private static extern nint dlerror();

    private static void Check(int code, string call)
    {
        if (code != 0) throw new InvalidOperationException($"{call} failed with MPI error code {code}");
    }

    private void CheckGather(int mine, int all)
    {
        if ((long)mine * Size != all)
            throw new ArgumentException($"AllGather: the result must hold {Size} x {mine} elements, got {all}");
    }

    private void CheckRank(int rank, string name)
    {
        if ((uint)rank >= (uint)Size) throw new ArgumentOutOfRangeException(name, rank, $"rank must be 0..{Size - 1}");
    }
}
