using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using UioLlm.Model.Formats;
using UioLlm.Training.Compare;
using UioLlm.Training.Demo;
using UioLlm.Training.Methods;

namespace UioLlm.Cli;

/// <summary>
/// `uio compare`: the trained methods side by side on the demo's base and passkey task (<see cref="CompareRunner"/>):
/// a table of accuracy by distance with each method's trainable parameters, time per step and memory held, as CSV and
/// as an SVG chart in --out (which also caches the demo's base, shared with `uio demo --out` on the same folder).
/// </summary>
internal static class CompareCommand
{
    public sealed record Options(string Out, string? Methods, int Seed, int Threads, bool Quick);

    public const string TableFile = "compare.csv", ChartFile = "compare.svg";

    public static int Run(Options o, TextWriter output, TextWriter error) => CliSupport.Guarded("compare", error, () =>
    {
        if (o.Threads < 0) throw new UsageException($"--threads must be 0 (all cores) or a positive number, got {o.Threads}");
        if (string.IsNullOrWhiteSpace(o.Out)) throw new UsageException("--out: give a folder for the results");
        if (File.Exists(o.Out)) throw new UsageException($"--out: '{o.Out}' is a file; give a folder (it is created if missing)");
        // Specs are separated by ';' or ',' (a method's own options are ':'-separated).
        var specs = (o.Methods ?? "").Split([';', ','], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var spec in specs)
        {
            string name = Model.Methods.MethodRegistry.ParseSpec(spec).Name;
            if (name != "uio") TrainableMethods.Find(name);   // an unknown name is a one-line usage error, before any work
        }
        var settings = (o.Quick ? CompareSettings.Quick : new CompareSettings()) with { Methods = specs };
        settings = settings with { Demo = settings.Demo with { Seed = o.Seed, Threads = o.Threads } };
        Directory.CreateDirectory(o.Out);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });
        console.Profile.Width = 200;
        var clock = Stopwatch.StartNew();
        console.MarkupLine(Markup.Escape($"uio compare{(o.Quick ? " --quick" : "")}: {string.Join(", ", settings.Specs())} on the demo's base and passkey task " +
            $"(curriculum {string.Join(" -> ", settings.Demo.Curriculum)} segments x {settings.Demo.StageSteps} steps, {settings.Demo.UioBatch} documents a step, lr {settings.Demo.UioLearningRate:G3}); seed {o.Seed}"));
        var lastTenth = new Dictionary<string, int>();
        var result = new CompareRunner(settings, new Sync(p =>
        {
            int tenth = p.Total == 0 ? 10 : 10 * p.Done / p.Total;
            if (lastTenth.TryGetValue(p.Phase, out int last) && last == tenth) return;
            lastTenth[p.Phase] = tenth;
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{clock.Elapsed.TotalSeconds,6:F1}s] {p.Phase}: {p.Done}/{p.Total} {p.Detail}"));
        }), Path.GetFullPath(o.Out)).Run();

        var table = new Table().Title("trained methods on the demo's passkey task: accuracy by distance (segments), cost");
        table.AddColumn("method");
        foreach (int d in settings.Demo.EvalDistances) table.AddColumn(new TableColumn($"d {d}").RightAligned());
        foreach (var h in new[] { "beyond window", "trainable", "s / step", $"memory @ {settings.MemoryWindows}x", "final loss" }) table.AddColumn(new TableColumn(h).RightAligned());
        foreach (var row in result.Rows)
        {
            if (row.Failure is not null)
            {
                table.AddRow([Markup.Escape(row.Method), .. settings.Demo.EvalDistances.Select(_ => "-"), "-", row.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture), "-", "-", Markup.Escape(row.Failure)]);
                continue;
            }
            table.AddRow([Markup.Escape(row.Method), .. row.Distances.Select(d => d.Accuracy.ToString("P0", CultureInfo.InvariantCulture)),
                row.FarAccuracy.ToString("P0", CultureInfo.InvariantCulture), row.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture),
                row.SecondsPerStep.ToString("F3", CultureInfo.InvariantCulture), Bytes(row.MemoryBytes), row.FinalLoss.ToString("F2", CultureInfo.InvariantCulture)]);
        }
        console.Write(table);
        string csv = Path.Combine(o.Out, TableFile), svg = Path.Combine(o.Out, ChartFile);
        AtomicFile.WriteText(csv, CompareCsv.Write(result));
        var series = result.Rows.Where(r => r.Failure is null).ToDictionary(r => r.Method, r => r.Distances.Select(d => ((double)d.Distance, d.Accuracy)).ToList());
        if (series.Count > 0)
        {
            AtomicFile.WriteText(svg, SvgChart.Lines($"trained methods: passkey accuracy vs needle distance (segments of {settings.Demo.SegmentLength} tokens, window {settings.Demo.Window})",
                "segments between the needle and the question", "passkey accuracy", series));
            console.MarkupLineInterpolated($"wrote {csv} and {svg}");
        }
        else console.MarkupLineInterpolated($"wrote {csv} (no method ran to the end: no chart)");
        foreach (var row in result.Rows.Where(r => r.Failure is not null))
            console.MarkupLineInterpolated($"{row.Method}: {row.Failure}");
        console.MarkupLineInterpolated($"total {(int)clock.Elapsed.TotalMinutes} min {clock.Elapsed.Seconds:00} s on {result.Device}{(result.BaseFromCache ? " (base from the cache)" : "")}");
        return 0;   // a method that could not run on this base is a row of the table, not a failure of the comparison
    });

    private static string Bytes(long bytes) => bytes switch
    {
        >= 1 << 20 => (bytes / (double)(1 << 20)).ToString("F1", CultureInfo.InvariantCulture) + " MiB",
        >= 1 << 10 => (bytes / (double)(1 << 10)).ToString("F1", CultureInfo.InvariantCulture) + " KiB",
        _ => bytes.ToString(CultureInfo.InvariantCulture) + " B",
    };

    private sealed class Sync(Action<DemoProgress> report) : IProgress<DemoProgress>
    {
        public void Report(DemoProgress value) => report(value);
    }
}
