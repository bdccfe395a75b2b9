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

    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    private static readonly string[] Methods =
    [
        "base (window 48)", "StreamingLLM (4 sinks + 44)", "UIO + TBPTT (S=2)", "UIO + unbiased (S=2)", "UIO + TBPTT (S=2) [far]", "UIO + unbiased (S=2) [far]",
    ];

    [Fact]
    public void QuickDemoPrintsTheTablesAndWritesCsvAndSvg()
    {
        string folder = Path.Combine(root, "a");
        var (code, output, error) = Run("demo", "--quick", "--out", folder, "--threads", "2", "--diagnose");
        Assert.True(code == 0, error);
        Assert.Equal("", error);
        // Plain progress lines (not a terminal), the phase summaries, the tables and the total time.
        Assert.Contains("pre-training the base: 6/6", output);
        Assert.Contains("base ceiling: in-window", output);
        Assert.Contains("passkey evaluation: ", output);
        Assert.Contains("passkey accuracy vs context length", output);
        Assert.Contains("passkey accuracy vs needle depth", output);
        Assert.Contains("passkey accuracy vs distance", output);
        Assert.Contains("attention mass on memory", output);
        Assert.Contains("trained with the key always more than S = 2 segments back, at distances 3-3: TBPTT ", output);
        Assert.Contains("1 x 48 = 48 tokens", output);
        Assert.Contains("total ", output);

        var csv = File.ReadAllLines(Path.Combine(folder, "passkey.csv"));
        Assert.Equal("windows,tokens,method,correct,trials,accuracy,beyond_budget", csv[0]);
        Assert.Equal(1 + 3 * Methods.Length, csv.Length);   // lengths 1, 2, 4 windows x 6 methods
        foreach (var method in Methods) Assert.Contains(csv, line => line.Split(',')[2] == method);
        Assert.All(csv.Skip(1), line =>
        {
            var cells = line.Split(',');
            Assert.Equal(7, cells.Length);
            Assert.InRange(double.Parse(cells[5], System.Globalization.CultureInfo.InvariantCulture), 0, 1);
            Assert.Equal("2", cells[4]);   // 2 depths x 1 trial
            Assert.Equal("0", cells[6]);   // every quick length fits the position budget
        });
        var byDepth = File.ReadAllLines(Path.Combine(folder, "passkey_by_depth.csv"));
        Assert.Equal("windows,tokens,depth,method,correct,trials,accuracy", byDepth[0]);
        Assert.Equal(1 + 3 * 2 * Methods.Length, byDepth.Length);
        var byDistance = File.ReadAllLines(Path.Combine(folder, "passkey_by_distance.csv"));
        Assert.Equal("distance_segments,tokens,method,correct,trials,accuracy", byDistance[0]);
        Assert.Equal(1 + 2 * Methods.Length, byDistance.Length);   // distances 1 and 3
        var diagnostics = File.ReadAllLines(Path.Combine(folder, "diagnostics.csv"));
        Assert.Equal(1 + 4 * 3, diagnostics.Length);   // 4 UIO memories x 3 layers

        string svg = File.ReadAllText(Path.Combine(folder, "passkey.svg"));
        Assert.StartsWith("<svg", svg);
        foreach (var method in Methods) Assert.Contains(System.Security.SecurityElement.Escape(method), svg);
        Assert.Equal(Methods.Length, svg.Split("<polyline").Length - 1);
        // The base is cached with its checksum; the trainers' runs (metrics and adapters) are kept beside the results.
        Assert.True(File.Exists(Path.Combine(folder, "base", "model.safetensors")));
        Assert.Contains("sha256", File.ReadAllText(Path.Combine(folder, "base", "base.json")));
        Assert.True(File.Exists(Path.Combine(folder, "runs", "uio-unbiased-s-2", "stage-1", "metrics.csv")));
        Assert.True(File.Exists(Path.Combine(folder, "runs", "uio-unbiased-s-2-far", "stage-0", "metrics.csv")));

        // A second run reuses the cached base (same fingerprint and checksum) and the trained memories (same run
        // fingerprint), and gives the same numbers.
        var (again, output2, error2) = Run("demo", "--quick", "--out", folder, "--threads", "2");
        Assert.True(again == 0, error2);
        Assert.Contains("pre-training the base: loaded from the cache", output2);
        foreach (var method in Methods.Skip(2)) Assert.Contains($"{method}: loaded from the cache", output2);
        Assert.DoesNotContain("UIO + TBPTT (S=2): 4/4", output2);
        Assert.Equal(csv, File.ReadAllLines(Path.Combine(folder, "passkey.csv")));
        // A damaged cache is not trusted: the base is pre-trained again (to the same bytes, so the runs still load).
        File.AppendAllText(Path.Combine(folder, "base", "model.safetensors"), "x");
        var (third, output3, error3) = Run("demo", "--quick", "--out", folder, "--threads", "2");
        Assert.True(third == 0, error3);
        Assert.DoesNotContain("pre-training the base: loaded from the cache", output3);
        Assert.Contains("pre-training the base: 6/6", output3);
        Assert.Equal(csv, File.ReadAllLines(Path.Combine(folder, "passkey.csv")));
        // A damaged run is trained again, and only that one.
        File.WriteAllText(Path.Combine(folder, "runs", "uio-tbptt-s-2", "run.json"), "{ not json");
        var (fourth, output4, error4) = Run("demo", "--quick", "--out", folder, "--threads", "2");
        Assert.True(fourth == 0, error4);
        Assert.Contains("UIO + TBPTT (S=2): 4/4", output4);
        Assert.DoesNotContain("UIO + TBPTT (S=2): loaded from the cache", output4);
        Assert.Contains("UIO + unbiased (S=2): loaded from the cache", output4);
        Assert.Equal(csv, File.ReadAllLines(Path.Combine(folder, "passkey.csv")));
    }

    [Fact]
    public void TheSameSeedGivesTheSameResults()
    {
        string a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
        Assert.Equal(0, Run("demo", "--quick", "--out", a, "--seed", "3").Code);
        Assert.Equal(0, Run("demo", "--quick", "--out", b, "--seed", "3").Code);
        Assert.Equal(File.ReadAllText(Path.Combine(a, "passkey_by_depth.csv")), File.ReadAllText(Path.Combine(b, "passkey_by_depth.csv")));
        Assert.Equal(File.ReadAllText(Path.Combine(a, "passkey_by_distance.csv")), File.ReadAllText(Path.Combine(b, "passkey_by_distance.csv")));
        string Metrics(string folder) => File.ReadAllText(Path.Combine(folder, "runs", "uio-unbiased-s-2", "stage-1", "metrics.csv"));
        Assert.Equal(Metrics(a).Split('\n').Select(Loss), Metrics(b).Split('\n').Select(Loss));
    }

    [Fact]
    public void AnAblationAddsItsRuns()
    {
        string folder = Path.Combine(root, "ablation");
        var (code, output, error) = Run("demo", "--quick", "--out", folder, "--ablation", "transfer-head");
        Assert.True(code == 0, error);
        Assert.Contains("UIO + unbiased (S=2) [no transfer head]", File.ReadAllText(Path.Combine(folder, "passkey.csv")));
        (code, _, error) = Run("demo", "--quick", "--out", folder, "--ablation", "sideways");
        Assert.Equal(2, code);
        Assert.Contains("--ablation", error);
        Assert.Contains("reservoir", error);
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
