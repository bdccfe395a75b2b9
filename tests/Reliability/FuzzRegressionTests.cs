using UioLlm.Fuzz;
using UioLlm.Kernels;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Reliability;

/// <summary>
/// The fuzzer (tests/Fuzz) as a regression test: a few hundred mutated inputs per parser with a fixed seed must
/// all end in a typed error or a clean parse, within the time and memory limits. The full run (100,000 inputs
/// per parser) is `dotnet run -c Release --project tests/Fuzz -- --inputs 100000`.
/// </summary>
public sealed class FuzzRegressionTests : IDisposable
{
    private readonly TempDir work = new();

    public void Dispose() => work.Dispose();

    [DataFact]
    public void EveryParserSurvivesAFewHundredMutatedInputs()
    {
        using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, 1);
        var targets = FuzzTargets.Create(TestData.Root!, work.Path, accelerator);
        Assert.Equal(FuzzTargets.Names.Length, targets.Count);
        var reports = FuzzRunner.Run(targets, inputsPerTarget: 300, seed: 15, work.Path, TimeSpan.FromSeconds(30), 1L << 30);
        string table = FuzzRunner.Table(reports);
        var failures = reports.SelectMany(r => r.Failures.Select(f => $"{r.Target}: {f.Value.Count} x {f.Value.Example}"));
        Assert.True(reports.All(r => r.Clean), table + "\n" + string.Join("\n\n", failures));
        // The mutations reach past the first check: every parser accepts some inputs and rejects others.
        Assert.All(reports, r => Assert.True(r.Typed > 0 && r.Accepted > 0, table));
    }
}
