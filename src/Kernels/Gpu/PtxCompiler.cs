using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace UioLlm.Kernels.Gpu;

/// <summary>One kernel compiled to PTX: its size, registers declared and local (spill) memory.</summary>
public sealed record PtxKernel(string Kernel, string Architecture, string Ptx, int Lines, int Registers, int LocalBytes)
{
    public override string ToString() => $"{Kernel,-28} {Architecture}: {Lines,5} PTX lines, {Registers,4} virtual registers, {LocalBytes} B local";
}

/// <summary>
/// Compiles every <see cref="DeviceCode"/> kernel to PTX with ILGPU's PTX backend and an explicit architecture; no GPU
/// or CUDA installation needed. On ILGPU's CPU accelerator the kernels run as .NET code, so this is what checks, in
/// CI, that ILGPU's own compiler accepts each kernel (intrinsics, shared memory, atomics, struct arguments).
/// </summary>
public static class PtxCompiler
{
    /// <summary>Every kernel entry point: public static void methods of <see cref="DeviceCode"/> whose first parameter is an
    /// Index1D (implicitly grouped) or that read Grid/Group themselves (explicitly grouped: no index parameter).</summary>
    public static IReadOnlyList<MethodInfo> Kernels { get; } = typeof(DeviceCode)
        .GetMethods(BindingFlags.Public | BindingFlags.Static)
        .Where(m => m.ReturnType == typeof(void))
        .OrderBy(m => m.Name, StringComparer.Ordinal)
        .ToList();

    /// <summary>Whether a kernel takes its index as the first parameter (auto-grouped) rather than reading Grid/Group.</summary>
    public static bool IsImplicitlyGrouped(MethodInfo kernel) =>
        kernel.GetParameters() is { Length: > 0 } p && p[0].ParameterType == typeof(Index1D);

    /// <summary>Compile every kernel for <paramref name="architecture"/> (e.g. SM_80) with PTX ISA <paramref name="instructionSet"/>.</summary>
    public static List<PtxKernel> CompileAll(CudaArchitecture architecture, CudaInstructionSet instructionSet)
    {
        using var context = Context.Create(b => b.EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(architecture), architecture, instructionSet, null);
        var results = new List<PtxKernel>();
        foreach (var kernel in Kernels)
        {
            var entry = IsImplicitlyGrouped(kernel)
                ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel)
                : EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
            CompiledKernel compiled;
            try
            {
                compiled = backend.Compile(entry, KernelSpecialization.Empty);
            }
            catch (Exception e)
            {
                throw new InvalidOperationException($"ILGPU could not compile kernel {kernel.Name} to PTX for {architecture}: {e.GetType().Name}: {e.Message}", e);
            }
            string ptx = ((PTXCompiledKernel)compiled).PTXAssembly;
            results.Add(new PtxKernel(kernel.Name, architecture.ToString(), ptx, ptx.Count(c => c == '\n'), CountRegisters(ptx), LocalBytes(ptx)));
        }
        return results;
    }

    /// <summary>Virtual registers declared by ".reg .type %name&lt;N&gt;;" lines (ptxas allocates the physical ones).</summary>
    private static int CountRegisters(string ptx)
    {
        int total = 0;
        foreach (Match m in Regex.Matches(ptx, @"\.reg\s+\.\w+\s+%\w+<(\d+)>;")) total += int.Parse(m.Groups[1].Value);
        return total;
    }

    /// <summary>Bytes of .local arrays (per-thread local memory the kernel declares).</summary>
    private static int LocalBytes(string ptx)
    {
        int total = 0;
        foreach (Match m in Regex.Matches(ptx, @"\.local\s+\.align\s+\d+\s+\.b8\s+\S+\[(\d+)\]")) total += int.Parse(m.Groups[1].Value);
        return total;
    }
}
