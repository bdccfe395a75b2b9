using UioLlm.Cli;

namespace UioLlm.Tests.Cli;

/// <summary>`uio demo --quick` in-process: the whole pipeline on tiny shapes, its files and its errors.</summary>
public sealed class DemoCliTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), "uiollm-demo-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private static readonly string[] MethodPrefixes = ["base (window 48)", "StreamingLLM (4 sinks + 44)", "UIO + TBPTT (S=2)", "UIO + unbiased (S=2)"];

    [Fact]
    public void QuickDemoPrintsTheTableAndWritesCsvAndSvg()
    {
        string folder = Path.Combine(root, "a");
        var (code, output, error) = Run("demo", "--quick", "--out", folder, "--threads", "2");
        Assert.True(code == 0, error);
        Assert.Equal("", error);
        // Plain progress lines (not a terminal), the phase summaries, both tables and the total time.
        Assert.Contains("pre-training the base: 6/6", output);
        Assert.Contains("passkey evaluation: ", output);
        Assert.Contains("passkey accuracy vs context length", output);
        Assert.Contains("passkey accuracy vs needle depth", output);
        Assert.Contains("1 x 48 = 48 tokens", output);
        Assert.Contains("total ", output);

        var csv = File.ReadAllLines(Path.Combine(folder, "passkey.csv"));
        Assert.Equal("windows,tokens,method,correct,trials,accuracy", csv[0]);
        Assert.Equal(1 + 3 * MethodPrefixes.Length, csv.Length);   // lengths 1, 2, 4 windows x 4 methods
        foreach (var method in MethodPrefixes) Assert.Contains(csv, line => line.Contains($",{method},", StringComparison.Ordinal));
        Assert.All(csv.Skip(1), line =>
        {
            var cells = line.Split(',');
            Assert.InRange(double.Parse(cells[^1], System.Globalization.CultureInfo.InvariantCulture), 0, 1);
            Assert.Equal("2", cells[^2]);   // 2 depths x 1 trial
        });
        var byDepth = File.ReadAllLines(Path.Combine(folder, "passkey_by_depth.csv"));
        Assert.Equal("windows,tokens,depth,method,correct,trials,accuracy", byDepth[0]);
        Assert.Equal(1 + 3 * 2 * MethodPrefixes.Length, byDepth.Length);

        string svg = File.ReadAllText(Path.Combine(folder, "passkey.svg"));
        Assert.StartsWith("<svg", svg);
        foreach (var method in MethodPrefixes) Assert.Contains(method, svg);
        Assert.Equal(MethodPrefixes.Length, svg.Split("<polyline").Length - 1);
        // The trainers' runs (metrics and final adapters) are kept beside the results.
        Assert.True(File.Exists(Path.Combine(folder, "runs", "uio-unbiased", "metrics.csv")));
    }

    [Fact]
    public void TheSameSeedGivesTheSameResults()
    {
        string a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
        Assert.Equal(0, Run("demo", "--quick", "--out", a, "--seed", "3").Code);
        Assert.Equal(0, Run("demo", "--quick", "--out", b, "--seed", "3").Code);
        Assert.Equal(File.ReadAllText(Path.Combine(a, "passkey_by_depth.csv")), File.ReadAllText(Path.Combine(b, "passkey_by_depth.csv")));
        Assert.Equal(File.ReadAllText(Path.Combine(a, "runs", "uio-unbiased", "metrics.csv")).Split('\n').Select(Loss),
            File.ReadAllText(Path.Combine(b, "runs", "uio-unbiased", "metrics.csv")).Split('\n').Select(Loss));
    }

    /// <summary>The loss column of a metrics.csv line (the other columns hold wall times).</summary>
    private static string Loss(string line) => line.Split(',').ElementAtOrDefault(1) ?? "";

    [Fact]
    public void BadValuesAreOneLineErrors()
    {
        var (code, _, error) = Run("demo", "--quick", "--threads", "-1", "--out", Path.Combine(root, "x"));
        Assert.Equal(2, code);
        Assert.Contains("--threads", error);
        Assert.Single(error.Trim().Split('\n'));

        Directory.CreateDirectory(root);
        string file = Path.Combine(root, "a-file");
        File.WriteAllText(file, "not a folder");
        (code, _, error) = Run("demo", "--quick", "--out", file);
        Assert.Equal(2, code);
        Assert.Contains("--out", error);
        Assert.Contains("is a file", error);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public void HelpNamesTheDemoAsWhatRunsWithoutACommand()
    {
        var (code, output, _) = Run("--help");
        Assert.Equal(0, code);
        Assert.Contains("demo", output);
        Assert.Contains("With no command, runs the built-in demo", output);
    }
}
