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
    public sealed record Options(string Out, string? Methods, int Seed, int Threads, bool Quick, bool Books = false, string? Data = null);

    public const string TableFile = "compare.csv", ChartFile = "compare.svg", BooksTableFile = "books.csv", BooksChartFile = "books.svg";

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
        if (o.Books) return RunBooks(o, specs, output);
        if (o.Data is not null) throw new UsageException("--data: only the books comparison (--books) reads the shared data");
        var settings = (o.Quick ? CompareSettings.Quick : new CompareSettings()) with { Methods = specs };
        settings = settings with { Demo = settings.Demo with { Seed = o.Seed, Threads = o.Threads } };
        Directory.CreateDirectory(o.Out);
        var console = Console(output);
        var clock = Stopwatch.StartNew();
        console.MarkupLine(Markup.Escape($"uio compare{(o.Quick ? " --quick" : "")}: {string.Join(", ", settings.Specs())} on the demo's base and passkey task " +
            $"(curriculum {string.Join(" -> ", settings.Demo.Curriculum)} segments x {settings.Demo.StageSteps} steps, {settings.Demo.UioBatch} documents a step, lr {settings.Demo.UioLearningRate:G3}); seed {o.Seed}"));
        var result = new CompareRunner(settings, Reporter(output, clock), Path.GetFullPath(o.Out)).Run();

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

    private static int RunBooks(Options o, string[] specs, TextWriter output)
    {
        string data = o.Data ?? DataRoot()
            ?? throw new UsageException("--data: give the shared data folder (it holds text/ and models/stories260K/tok512.bin); neither UIOLLM_DATA nor ../shared/data has it");
        var settings = (o.Quick ? BooksSettings.Quick : BooksSettings.Default) with { Methods = specs, Seed = o.Seed, Threads = o.Threads, DataFolder = data };
        foreach (var file in settings.TrainBooks.Append(settings.HeldOutBook).Append(settings.TokenizerFile))
            CliSupport.RequireExists(Path.Combine(data, file), "--data");
        Directory.CreateDirectory(o.Out);
        var console = Console(output);
        var clock = Stopwatch.StartNew();
        console.MarkupLine(Markup.Escape($"uio compare --books{(o.Quick ? " --quick" : "")}: {string.Join(", ", settings.Specs())}; base pre-trained on {string.Join(", ", settings.TrainBooks.Select(Path.GetFileName))} " +
            $"(window {settings.Window}), each method trained {settings.TrainSteps} steps x {settings.TrainBatch} documents of {settings.TrainWindows} windows (lr {settings.LearningRate:G3}); " +
            $"perplexity on {Path.GetFileName(settings.HeldOutBook)} (held out) at {string.Join(", ", settings.EvalWindows.Select(w => $"{w}x"))}; seed {o.Seed}"));
        var result = new BooksCompareRunner(settings, Reporter(output, clock), Path.GetFullPath(o.Out)).Run();

        var table = new Table().Title($"perplexity of each excerpt's last window of the held-out book, read with 1x..{settings.EvalWindows.Max()}x the window ({settings.Window} tokens) of context; {EvalOutputMarker} = past the trained range");
        table.AddColumn("method");
        foreach (int w in settings.EvalWindows) table.AddColumn(new TableColumn($"{w}x").RightAligned());
        foreach (var h in new[] { "trainable", "s / step", $"memory @ {settings.EvalWindows.Max()}x", "final loss" }) table.AddColumn(new TableColumn(h).RightAligned());
        foreach (var row in result.Rows)
        {
            if (row.Failure is not null)
            {
                table.AddRow([Markup.Escape(row.Method), .. settings.EvalWindows.Select(_ => "-"), row.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture), "-", "-", Markup.Escape(row.Failure)]);
                continue;
            }
            table.AddRow([Markup.Escape(row.Method), .. row.Cells.Select(c => c.LastWindowPerplexity.ToString("F2", CultureInfo.InvariantCulture) + (c.OutOfRange ? EvalOutputMarker : "")),
                row.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture), row.SecondsPerStep > 0 ? row.SecondsPerStep.ToString("F3", CultureInfo.InvariantCulture) : "-",
                Bytes(row.MemoryBytes), double.IsNaN(row.FinalLoss) ? "-" : row.FinalLoss.ToString("F3", CultureInfo.InvariantCulture)]);
        }
        console.Write(table);
        string csv = Path.Combine(o.Out, BooksTableFile), svg = Path.Combine(o.Out, BooksChartFile);
        AtomicFile.WriteText(csv, BooksCsv.Write(result));
        // Drawn on a scale that shows the differences among the methods that stay near the base; a method whose
        // perplexity leaves that scale (extrapolation blow-ups) is named under the chart and stays in the table.
        var measured = result.Rows.Where(r => r.Failure is null && r.Cells.Count > 0).ToList();
        double reference = measured.Min(r => r.Cells[0].LastWindowPerplexity), ceiling = 1.5 * reference;
        var drawn = measured.Where(r => r.Cells.All(c => c.LastWindowPerplexity <= ceiling)).ToList();
        var offScale = measured.Except(drawn).Select(ChartName).ToList();
        var series = drawn.ToDictionary(ChartName, r => r.Cells.Select(c => ((double)c.Windows, c.LastWindowPerplexity)).ToList());
        AtomicFile.WriteText(svg, UioLlm.Training.Eval.SvgChart.Lines($"perplexity of the same last {settings.Window} tokens of {Path.GetFileName(settings.HeldOutBook)} (held out) vs context read",
            "context (windows)", "perplexity of the last window", series, yFloor: Math.Floor(drawn.Min(r => r.Cells.Min(c => c.LastWindowPerplexity))),
            note: offScale.Count == 0 ? null : $"above {ceiling:F0} somewhere, in the table only: {string.Join(", ", offScale)}"));
        console.MarkupLineInterpolated($"wrote {csv} and {svg}");
        foreach (var row in result.Rows.Where(r => r.Failure is not null))
            console.MarkupLineInterpolated($"{row.Method}: {row.Failure}");
        console.MarkupLineInterpolated($"{result.TrainTokens:N0} training tokens, {result.HeldOutTokens:N0} held-out tokens; total {(int)clock.Elapsed.TotalMinutes} min {clock.Elapsed.Seconds:00} s on {result.Device}{(result.BaseFromCache ? " (base from the cache)" : "")}");
        return 0;
    }

    /// <summary>A books row's name in the chart: a trained method by its registry name, a reference as it is.</summary>
    private static string ChartName(BooksRow row) => row.TrainableParameters > 0 ? row.Spec.Split(':')[0] : row.Method;

    private static readonly string EvalOutputMarker = UioLlm.Training.Eval.EvalOutput.OutOfRangeMarker.Trim();

    /// <summary>The shared data folder (UIOLLM_DATA, else ../shared/data) when it holds text/.</summary>
    private static string? DataRoot() => CliSupport.FindDataFolder("text") is { } text ? Path.GetDirectoryName(Path.GetFullPath(text)) : null;

    private static IAnsiConsole Console(TextWriter output)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });
        console.Profile.Width = 200;
        return console;
    }

    /// <summary>Prints each phase's progress at every tenth.</summary>
    private static Sync Reporter(TextWriter output, Stopwatch clock)
    {
        var lastTenth = new Dictionary<string, int>();
        return new Sync(p =>
        {
            int tenth = p.Total == 0 ? 10 : 10 * p.Done / p.Total;
            if (lastTenth.TryGetValue(p.Phase, out int last) && last == tenth) return;
            lastTenth[p.Phase] = tenth;
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{clock.Elapsed.TotalSeconds,6:F1}s] {p.Phase}: {p.Done}/{p.Total} {p.Detail}"));
        });
    }

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
