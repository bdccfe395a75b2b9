using UioLlm.Kernels;
using UioLlm.Kernels.Cuda;
using UioLlm.Parity;
using Xunit.Abstractions;

namespace UioLlm.Tests.Kernels;

/// <summary>Whether NVRTC and a CUDA device are usable here, with a one-line reason when not.</summary>
internal static class CudaAvailability
{
    private static readonly Lazy<string?> nvrtcReason = new(() =>
    {
        var n = Nvrtc.TryLoad(out string? reason);
        return n is null ? reason : null;
    });

    private static readonly Lazy<string?> deviceReason = new(CudaAccelerator.UnavailableReason);

    public static string? NvrtcMissing => nvrtcReason.Value;

    public static string? DeviceMissing => deviceReason.Value;

    public static bool InCi => Environment.GetEnvironmentVariable("CI") == "true";
}

/// <summary>A fact that needs NVRTC: skipped with the reason outside CI when NVRTC is missing; in CI (CI=true) it runs and fails.</summary>
public sealed class NvrtcFactAttribute : FactAttribute
{
    public NvrtcFactAttribute()
    {
        if (CudaAvailability.NvrtcMissing is { } why && !CudaAvailability.InCi) Skip = "NVRTC not installed: " + why;
    }
}

public sealed class NvrtcTheoryAttribute : TheoryAttribute
{
    public NvrtcTheoryAttribute()
    {
        if (CudaAvailability.NvrtcMissing is { } why && !CudaAvailability.InCi) Skip = "NVRTC not installed: " + why;
    }
}

/// <summary>A theory that runs kernels: skipped with the reason when there is no usable GPU.</summary>
public sealed class GpuTheoryAttribute : TheoryAttribute
{
    public GpuTheoryAttribute()
    {
        if (CudaAvailability.DeviceMissing is { } why) Skip = "no GPU: " + why;
    }
}

public sealed class CudaCompileTests(ITestOutputHelper output)
{
    /// <summary>Every embedded .cu compiles to a real cubin for sm_80 and sm_90 with no error and no warning;
    /// registers and spills per kernel are printed and no kernel spills.</summary>
    [NvrtcTheory]
    [InlineData(80)]
    [InlineData(90)]
    public void EveryKernelCompilesForTheArchitectureWithoutWarningsOrSpills(int arch)
    {
        var nvrtc = Nvrtc.TryLoad(out string? reason);
        Assert.True(nvrtc is not null, reason);
        output.WriteLine($"NVRTC {nvrtc!.Version} from {nvrtc.LibraryPath}");
        var results = CudaSources.CompileAll(arch);
        Assert.Equal(CudaSources.Sources.Count, results.Count);
        Assert.True(results.Count >= 7, $"only {results.Count} sources embedded");
        foreach (var r in results)
        {
            Assert.True(r.IsCubin, $"{r.Source}: expected a cubin for sm_{arch}, got {r.Architecture}");
            Assert.Equal($"sm_{arch}", r.Architecture);
            Assert.True(r.Image.Length > 0 && r.Image[0] == 0x7f && r.Image[1] == (byte)'E', $"{r.Source}: the image is not an ELF cubin");
            Assert.True(r.Diagnostics.Count == 0, $"{r.Source} sm_{arch}:\n{string.Join('\n', r.Diagnostics)}");
        }
        foreach (string line in CudaSources.ResourceReport(results)) output.WriteLine(line);
        var usage = results.SelectMany(r => r.Usage).ToList();
        // Every kernel the backend launches was compiled and reported.
        foreach (var (source, kernel) in CudaKernels.AllKernels)
            Assert.Contains(usage, u => u.Source == source && u.Kernel == kernel);
        Assert.All(usage, u =>
        {
            Assert.InRange(u.Registers, 1, 255);
            Assert.True(u.SpillStoreBytes == 0 && u.SpillLoadBytes == 0, $"{u.Kernel} spills on {u.Architecture}: {u}");
        });
    }

    [NvrtcFact]
    public void CompileErrorsNameTheSourceAndCarryTheLog()
    {
        var nvrtc = Nvrtc.TryLoad(out string? reason);
        Assert.True(nvrtc is not null, reason);
        var e = Assert.Throws<CudaException>(() => nvrtc!.Compile("broken.cu", "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
            CudaSources.Headers, 80, CudaSources.Options));
        Assert.Contains("broken.cu", e.Message);
        Assert.Contains("undefined_name", e.Message);
    }

    [NvrtcFact]
    public void ANewerDeviceThanNvrtcKnowsGetsPtxForTheNewestSupportedArchitecture()
    {
        var nvrtc = Nvrtc.TryLoad(out string? reason);
        Assert.True(nvrtc is not null, reason);
        int beyond = nvrtc!.SupportedArchitectures.Max() + 1;
        var r = nvrtc.Compile("elementwise.cu", CudaSources.Get("elementwise.cu"), CudaSources.Headers, beyond, CudaSources.Options);
        Assert.False(r.IsCubin);
        Assert.Equal($"compute_{nvrtc.SupportedArchitectures.Max()}", r.Architecture);
        Assert.Contains(".entry ew_add", System.Text.Encoding.ASCII.GetString(r.Image));
    }
}

public sealed class CudaHostTests
{
    [Fact]
    public void PtxasLogsParseIntoRegistersAndSpillsPerEntryFunction()
    {
        const string log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function 'k1' for 'sm_80'
            ptxas info    : Function properties for k1
            ptxas         .     16 bytes stack frame, 24 bytes spill stores, 20 bytes spill loads
            ptxas info    : Used 64 registers, 1792 bytes smem, 448 bytes cmem[0]
            ptxas info    : Function properties for __internal_trig_reduction_slowpathd
            ptxas         .     40 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Compiling entry function 'k2' for 'sm_80'
            ptxas info    : Function properties for k2
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 30 registers, 392 bytes cmem[0]
            """;
        var usage = Nvrtc.ParseUsage("x.cu", "sm_80", log);
        Assert.Equal(2, usage.Count);
        Assert.Equal(new KernelResourceUsage("x.cu", "k1", "sm_80", 64, 24, 20, 16), usage[0]);
        Assert.Equal(new KernelResourceUsage("x.cu", "k2", "sm_80", 30, 0, 0, 0), usage[1]);
        Assert.Empty(Nvrtc.DiagnosticLines(log));
        Assert.Single(Nvrtc.DiagnosticLines(log + "\nx.cu(3): warning #177-D: variable \"y\" was declared but never referenced"));
    }

    [Fact]
    public unsafe void KernelArgumentsArePackedAsTheDriverReadsThem()
    {
        KernelArg[] args = [KernelArg.Int(-2), KernelArg.Float(1.5f), KernelArg.Long(1L << 40), KernelArg.Pointer((nint)0x1234_5678), KernelArg.Double(0.25)];
        long* values = stackalloc long[args.Length];
        void** pointers = stackalloc void*[args.Length];
        KernelArg.Pack(args, values, pointers);
        Assert.Equal(-2, *(int*)pointers[0]);
        Assert.Equal(1.5f, *(float*)pointers[1]);
        Assert.Equal(1L << 40, *(long*)pointers[2]);
        Assert.Equal((nint)0x1234_5678, *(nint*)pointers[3]);
        Assert.Equal(0.25, *(double*)pointers[4]);
        for (int i = 0; i < args.Length; i++) Assert.True(pointers[i] == values + i);
        Assert.Equal(0L, KernelArg.Of(null).Bits);
    }

    [Fact]
    public void LaunchGeometryCoversTheWorkAndRespectsCudaLimits()
    {
        var l = LaunchShape.Linear(1000, 256);
        Assert.Equal((4u, 256u), (l.GridX, l.BlockX));
        Assert.False(l.IsEmpty);
        Assert.True(LaunchShape.Linear(0).IsEmpty);
        Assert.Equal(65535u * 8, LaunchShape.Linear(1L << 40).GridX);   // capped: kernels stride over the rest
        var bad = LaunchShape.Grid(1, 70000, 1, 256);
        Assert.Contains("'k'", Assert.Throws<ArgumentException>(() => bad.Validate("k", 100_000)).Message);
        Assert.Throws<ArgumentException>(() => LaunchShape.Grid(1, 1, 1, 2048).Validate("k", 100_000));
        Assert.Throws<ArgumentException>(() => LaunchShape.Grid(1, 1, 1, 256, 200_000).Validate("k", 166_912));
        LaunchShape.Grid(1, 1, 1, 256, CudaKernels.AttentionForwardShared(256)).Validate("attn", 166_912);   // fits an A100
        LaunchShape.Grid(1, 1, 1, 256, CudaKernels.AttentionBackwardShared(256)).Validate("attn", 166_912);
    }

    [Theory]
    [InlineData(4096, 4096, 1, 132, 'l')]
    [InlineData(256, 288, 1, 132, 's')]
    [InlineData(1024, 768, 1, 132, 'm')]
    [InlineData(64, 64, 512, 132, 'm')]
    [InlineData(128, 128, 512, 132, 'l')]
    [InlineData(1, 32000, 1, 132, 's')]
    public void GemmTilesKeepEverySmBusy(int m, int n, int batch, int sms, char expected) =>
        Assert.Equal(expected, CudaKernels.GemmTile(m, n, batch, sms));

    [Theory]
    [InlineData(1, 64)]
    [InlineData(48, 64)]
    [InlineData(64, 64)]
    [InlineData(65, 128)]
    [InlineData(128, 128)]
    [InlineData(256, 256)]
    [InlineData(257, 0)]
    public void AttentionPicksTheSmallestVariantThatHoldsTheHeadDimension(int d, int variant) =>
        Assert.Equal(variant, CudaKernels.AttentionVariant(d));

    [Theory]
    [InlineData(1, 288)]
    [InlineData(63, 7)]
    [InlineData(4096, 288)]
    [InlineData(1_000_000, 33)]
    public void RmsNormWeightGridCoversEveryRowAndColumnOnce(int rows, int d)
    {
        var (shape, perBlock) = CudaKernels.RmsNormWeightGrid(rows, d);
        Assert.True(shape.GridX * 32 >= d && (shape.GridX - 1) * 32 < d);
        Assert.True((long)shape.GridY * perBlock >= rows && (shape.GridY - 1) * perBlock < rows);
        Assert.True(shape.GridY <= 1024);
        shape.Validate("rmsnorm_bwd_dw", 48 * 1024);
    }

    [Fact]
    public void DriverErrorsNameTheErrorAndItsDescription()
    {
        Assert.Equal("CUDA_ERROR_OUT_OF_MEMORY (2): out of memory", CudaDriver.ErrorText(2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"));
        Assert.Equal("CUDA error (999)", CudaDriver.ErrorText(999, null, null));
    }

    [Fact]
    public void NvrtcLibrariesAreTriedNewestFirst()
    {
        var names = new[] { "libnvrtc.so.11.2", "libnvrtc.so.12", "libnvrtc.so", "libnvrtc.so.12.4.127" };
        var sorted = names.OrderByDescending(Nvrtc.VersionKey, StringComparer.Ordinal).ToArray();
        Assert.Equal(["libnvrtc.so.12.4.127", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"], sorted);
    }

    [Fact]
    public void AutoFallsBackToTheCpuAndSaysWhyWhenCudaIsUnusable()
    {
        string? reason = CudaAccelerator.UnavailableReason();
        using var auto = Accelerator.Create(AcceleratorKind.Auto);
        if (reason is null)
        {
            Assert.Equal(AcceleratorKind.Cuda, auto.Kind);
            Assert.Null(auto.FallbackReason);
            return;
        }
        Assert.Equal(AcceleratorKind.Cpu, auto.Kind);
        Assert.Contains(reason, auto.FallbackReason);
        var e = Assert.Throws<AcceleratorUnavailableException>(() => Accelerator.Create(AcceleratorKind.Cuda));
        Assert.Equal(reason, e.Message);
    }

    [Fact]
    public void AMissingDriverLibraryIsReportedByName()
    {
        // The driver is probed once per process; the message format is what users see when libcuda.so.1 is absent.
        if (CudaDriver.TryLoad(out string? reason) is null)
            Assert.Matches("libcuda|cuInit|lacks", reason!);
        else
            Assert.Null(reason);
    }

    [Fact]
    public void EmbeddedSourcesAreHeaderFreeAndCacheKeysChangeWithTheArchitecture()
    {
        Assert.Contains("attention.cu", CudaSources.Sources.Keys);
        foreach (var (name, text) in CudaSources.Sources)
        {
            foreach (string line in text.Split('\n').Where(l => l.TrimStart().StartsWith("#include", StringComparison.Ordinal)))
                Assert.Equal($"#include \"{CudaSources.CommonHeader}\"", line.Trim());
            Assert.Contains("extern \"C\" __global__", text);
            _ = name;
        }
        var v = new Version(12, 4);
        Assert.NotEqual(CudaSources.CacheKey("gemm.cu", 80, v), CudaSources.CacheKey("gemm.cu", 90, v));
        Assert.NotEqual(CudaSources.CacheKey("gemm.cu", 80, v), CudaSources.CacheKey("rope.cu", 80, v));
        Assert.Equal(CudaSources.CacheKey("gemm.cu", 80, v), CudaSources.CacheKey("gemm.cu", 80, v));
    }
}

public sealed class KernelParitySuiteTests
{
    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in KernelParity.Cases) data.Add(c.Name);
        return data;
    }

    /// <summary>The suite covers every op of the contract (so the runner cannot silently skip one).</summary>
    [Fact]
    public void EveryOpOfTheContractHasParityCases()
    {
        var ops = typeof(IKernels).GetMethods().Select(m => m.Name).Distinct().ToList();
        var covered = KernelParity.Cases.Select(c => c.Op).ToHashSet();
        Assert.All(ops, op => Assert.Contains(op, covered));
        Assert.Equal(KernelParity.Cases.Count, KernelParity.Cases.Select(c => c.Name).Distinct().Count());
    }

    /// <summary>Each case runs on two CPU accelerators (same kernels): it must be well-formed and compare equal.
    /// Catches a broken case here rather than on a GPU machine.</summary>
    [Fact]
    public void EveryCaseRunsAndPassesCpuAgainstCpu()
    {
        using var a = Accelerator.Create(AcceleratorKind.Cpu, 1);
        using var b = Accelerator.Create(AcceleratorKind.Cpu, 2);
        var failures = KernelParity.Cases.Select(c => KernelParity.Run(c, a, b)).Where(r => !r.Passed).Select(r => $"{r.Case}: {r.Detail}").ToList();
        Assert.True(failures.Count == 0, string.Join('\n', failures));
    }

    [Fact]
    public void AComparisonFailsOnAWrongValueAndOnNaN()
    {
        using var a = Accelerator.Create(AcceleratorKind.Cpu, 1);
        var bad = new ParityCase("bad", "Fill", c => c.Compare("x", [1f, 2f], [1f, 2.1f]));
        var nan = new ParityCase("nan", "Fill", c => c.Compare("x", [1f], [float.NaN]));
        Assert.False(KernelParity.Run(bad, a, a).Passed);
        Assert.False(KernelParity.Run(nan, a, a).Passed);
        Assert.True(KernelParity.Run(new ParityCase("ok", "Fill", c => c.Compare("x", [1f, float.NegativeInfinity], [1f, float.NegativeInfinity])), a, a).Passed);
    }

    /// <summary>The same cases on the GPU against the CPU kernels (skipped without a GPU).</summary>
    [GpuTheory]
    [MemberData(nameof(CaseNames))]
    public void CudaMatchesTheCpuKernels(string name)
    {
        var c = KernelParity.Cases.Single(x => x.Name == name);
        using var cpu = Accelerator.Create(AcceleratorKind.Cpu);
        var r = KernelParity.Run(c, cpu, GpuDevice.Shared);
        Assert.True(r.Passed, $"{r.Case}: {r.Detail}");
    }
}

internal static class GpuDevice
{
    private static readonly Lazy<Accelerator> shared = new(() => Accelerator.Create(AcceleratorKind.Cuda));

    public static Accelerator Shared => shared.Value;
}
