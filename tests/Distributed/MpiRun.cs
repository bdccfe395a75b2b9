using System.Diagnostics;
using UioLlm.Kernels.Distributed;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Distributed;

/// <summary>Runs the `uio` command line under `mpirun -np N` on this machine (Open MPI).</summary>
internal static class MpiRun
{
    /// <summary>Why `mpirun` cannot be used here, or null when it can.</summary>
    public static string? MissingReason { get; } = FindMissingReason();

    private static string? FindMissingReason()
    {
        if (FindOnPath("mpirun") is null) return "MPI tests need Open MPI's mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev; .ci/run installs it)";
        return MpiCommunicator.UnavailableReason() is { } why ? $"MPI tests need Open MPI's libmpi: {why}" : null;
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, name)).FirstOrDefault(File.Exists);

    /// <summary>`mpirun -np <paramref name="ranks"/> dotnet uio.dll ARGS`: exit code and the merged output.</summary>
    public static (int Code, string Output) Uio(int ranks, params string[] args)
    {
        string uio = typeof(UioLlm.Cli.Program).Assembly.Location;
        var info = new ProcessStartInfo("mpirun")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // Root in CI containers; more ranks than cores is fine here; shared-memory copies without the
        // cross-memory-attach mechanism, which containers often forbid; ranks waiting in MPI yield the core
        // instead of spinning (the machine runs other tests at the same time).
        foreach (var a in new[] { "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none",
                     "--mca", "mpi_yield_when_idle", "1",
                     "-np", ranks.ToString(), "dotnet", uio })
            info.ArgumentList.Add(a);
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info) ?? throw new InvalidOperationException("could not start mpirun");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(300)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"mpirun -np {ranks} uio {string.Join(' ', args)} did not finish in 300 s");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }
}

/// <summary>
/// A fact run under mpirun: skipped with a one-line reason where Open MPI is missing, except in CI
/// (CI=true), where .ci/run installs it and a missing MPI must fail.
/// </summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiRun.MissingReason is { } why && Environment.GetEnvironmentVariable("CI") != "true") Skip = why;
    }
}

/// <summary>An <see cref="MpiFactAttribute"/> that also reads the shared test data.</summary>
public sealed class MpiDataFactAttribute : FactAttribute
{
    public MpiDataFactAttribute()
    {
        if (MpiRun.MissingReason is { } why && Environment.GetEnvironmentVariable("CI") != "true") Skip = why;
        else if (TestData.Root is null) Skip = TestData.MissingReason;
    }
}
