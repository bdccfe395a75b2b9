using UioLlm.Cli;
using UioLlm.Training.Methods;

namespace UioLlm.Tests.Cli;

/// <summary>`uio compare --quick` in-process: every trained method on the demo's tiny base, its table, files and errors.</summary>
public sealed class CompareCliTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), "uiollm-compare-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    [Fact]
    public void QuickComparisonTrainsEveryMethodAndWritesTheTable()
    {
        string folder = Path.Combine(root, "all");
        var (code, output, error) = Run("compare", "--quick", "--out", folder, "--threads", "2");
        Assert.True(code == 0, error + output);
        Assert.Equal("", error);
        // Every method trains, Activation Beacon included although the demo's base has a local layer (its raw tokens
        // keep the base's sliding window there, its beacons the step-expansion rule).
        string[] methods = ["uio", .. TrainableMethods.All.Select(m => m.Name)];
        Assert.Contains("activation-beacon", methods);
        foreach (var m in methods) Assert.Contains($"│ {m}", output);
        Assert.Contains("beyond window", output);
        Assert.DoesNotContain("cannot be built", output);
        var csv = File.ReadAllLines(Path.Combine(folder, "compare.csv"));
        Assert.Equal(UioLlm.Training.Compare.CompareCsv.Header, csv[0]);
        Assert.Equal(1 + 2 * methods.Length, csv.Length);   // distances 1 and 3 per method
        Assert.All(csv.Skip(1), line => Assert.EndsWith(",", line));   // no failure cell
        foreach (var m in methods)
        {
            var rows = csv.Skip(1).Where(l => l.StartsWith(m + ",", StringComparison.Ordinal) || l.StartsWith($"\"{m} (", StringComparison.Ordinal) || l.StartsWith($"{m} (", StringComparison.Ordinal)).ToList();
            Assert.Equal(2, rows.Count);
            var cells = rows[0].Split(',').TakeLast(5).ToArray();   // parameters, seconds, memory, loss, failure
            Assert.True(long.Parse(cells[0]) > 0, $"{m}: trainable parameters");
            Assert.True(long.Parse(cells[2]) > 0, $"{m}: memory held");
        }
        string svg = File.ReadAllText(Path.Combine(folder, "compare.svg"));
        Assert.Equal(methods.Length, svg.Split("<polyline").Length - 1);
        // The trained adapters are kept, and each rebuilds its method (the same path `uio eval --adapter` takes).
        Assert.True(File.Exists(Path.Combine(folder, "compare", "uio", "adapter", "adapter_config.json")));
        Assert.True(File.Exists(Path.Combine(folder, "base", "model.safetensors")));
    }

    [Fact]
    public void AnUnknownMethodIsAOneLineUsageError()
    {
        var (code, _, error) = Run("compare", "--quick", "--out", Path.Combine(root, "bad"), "--methods", "uio;no-such-method");
        Assert.Equal(2, code);
        Assert.Contains("no-such-method", error);
        Assert.Single(error.Trim().Split('\n'));
        (code, _, error) = Run("compare", "--quick", "--out", Path.Combine(root, "bad"), "--threads", "-1");
        Assert.Equal(2, code);
        Assert.Contains("--threads", error);
    }
}
