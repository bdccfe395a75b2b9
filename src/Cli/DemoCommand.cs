using System.Diagnostics;
using System.Globalization;
using System.Text;
using Spectre.Console;
using UioLlm.Model.Formats;
using UioLlm.Training.Demo;

namespace UioLlm.Cli;

/// <summary>
/// `uio demo` (and `uio` alone): the built-in demo, no download and no file needed (see <see cref="DemoRunner"/>).
/// Draws a progress bar on a terminal (plain lines otherwise), prints the passkey table, and writes it as CSV and
/// as an SVG chart into --out.
/// </summary>
internal static class DemoCommand
{
    public sealed record Options(string Out, int Seed, int Threads, bool Quick);

    public const string TableFile = "passkey.csv", DepthFile = "passkey_by_depth.csv", ChartFile = "passkey.svg";

    public static int Run(Options o, TextWriter output, TextWriter error) => CliSupport.Guarded("demo", error, () =>
    {
        if (o.Threads < 0) throw new UsageException($"--threads must be 0 (all cores) or a positive number, got {o.Threads}");
        if (string.IsNullOrWhiteSpace(o.Out)) throw new UsageException("--out: give a folder for the results");
        if (File.Exists(o.Out)) throw new UsageException($"--out: '{o.Out}' is a file; give a folder (it is created if missing)");
        var settings = (o.Quick ? DemoSettings.Quick : DemoSettings.Default) with { Seed = o.Seed, Threads = o.Threads };
        Directory.CreateDirectory(o.Out);

        // A live progress bar only on a real terminal; tests, files and pipes get plain lines without escapes.
        bool terminal = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        });
        bool interactive = terminal && console.Profile.Capabilities.Interactive;
        if (!interactive) console.Profile.Width = 160;   // no wrapping of the tables
        var clock = Stopwatch.StartNew();
        console.MarkupLine($"[bold]uio demo[/]{(o.Quick ? " --quick" : "")}: a tiny Llama with a {settings.Window}-token window learns passkey retrieval; "
            + $"UIO memory (segments of {settings.SegmentLength}, {settings.SegmentLength / settings.MemoryTokens}x) is trained with truncated BPTT and with the unbiased estimator; seed {settings.Seed}");

        var runner = new DemoRunner(settings, progress: null);   // for the method names
        DemoResult result;
        if (interactive)
        {
            result = null!;
            console.Progress().AutoClear(false).HideCompleted(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var tasks = new[] { DemoRunner.PretrainPhase, runner.TbpttMethod, runner.UnbiasedMethod, DemoRunner.EvaluatePhase }
                        .ToDictionary(p => p, p => ctx.AddTask(Markup.Escape(p), autoStart: false, maxValue: 1));
                    result = new DemoRunner(settings, new SyncProgress(p =>
                    {
                        var task = tasks[p.Phase];
                        if (!task.IsStarted) task.StartTask();
                        task.MaxValue = p.Total;
                        task.Value = p.Done;
                        task.Description = Markup.Escape($"{p.Phase}: {p.Detail}");
                    }), Path.Combine(o.Out, "runs")).Run();
                });
        }
        else
        {
            var lastTenth = new Dictionary<string, int>();
            result = new DemoRunner(settings, new SyncProgress(p =>
            {
                // Plain lines: each phase at every tenth of its work.
                int tenth = p.Total == 0 ? 10 : 10 * p.Done / p.Total;
                if (lastTenth.TryGetValue(p.Phase, out int last) && last == tenth) return;
                lastTenth[p.Phase] = tenth;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{clock.Elapsed.TotalSeconds,6:F1}s] {p.Phase}: {p.Done}/{p.Total} {p.Detail}"));
            }), Path.Combine(o.Out, "runs")).Run();
        }

        foreach (var phase in result.Phases)
            console.MarkupLineInterpolated($"{phase.Name}: {phase.Summary} ({phase.Elapsed.TotalSeconds:F1} s)");
        console.Write(LengthTable(result));
        console.Write(DepthTable(result));

        string csv = Path.Combine(o.Out, TableFile), byDepth = Path.Combine(o.Out, DepthFile), svg = Path.Combine(o.Out, ChartFile);
        AtomicFile.WriteText(csv, TableCsv(result));
        AtomicFile.WriteText(byDepth, DepthCsv(result));
        AtomicFile.WriteText(svg, Chart(result));
        console.MarkupLineInterpolated($"wrote {csv}, {byDepth} and {svg}");
        console.MarkupLineInterpolated($"total {Minutes(clock.Elapsed)} on {result.Device}");
        return 0;
    });

    private static string Percent(double accuracy) => accuracy.ToString("P0", CultureInfo.InvariantCulture);

    private static string Minutes(TimeSpan t) => string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalMinutes} min {t.Seconds:00} s");

    private static Table LengthTable(DemoResult result)
    {
        var table = new Table().Title("passkey accuracy vs context length (all depths)").AddColumn("context");
        foreach (var m in result.Methods) table.AddColumn(Markup.Escape(m), c => c.RightAligned());
        foreach (int w in result.Settings.EvalWindows)
        {
            var row = new List<string> { $"{w} x {result.Settings.Window} = {w * result.Settings.Window} tokens" };
            row.AddRange(result.Methods.Select(m => Percent(result.Accuracy(m, w))));
            table.AddRow(row.ToArray());
        }
        return table;
    }

    private static Table DepthTable(DemoResult result)
    {
        var beyond = result.Settings.EvalWindows.Where(w => w > 1).ToHashSet();
        var table = new Table().Title($"passkey accuracy vs needle depth ({(beyond.Count > 0 ? "contexts longer than the window" : "all contexts")})").AddColumn("depth");
        foreach (var m in result.Methods) table.AddColumn(Markup.Escape(m), c => c.RightAligned());
        foreach (double depth in result.Settings.Depths)
        {
            var row = new List<string> { depth.ToString("0.##", CultureInfo.InvariantCulture) };
            foreach (var m in result.Methods)
            {
                var cells = result.Results.Where(r => r.Method == m && r.Depth == depth && (beyond.Count == 0 || beyond.Contains(r.Windows))).ToList();
                row.Add(Percent((double)cells.Sum(c => c.Correct) / cells.Sum(c => c.Trials)));
            }
            table.AddRow(row.ToArray());
        }
        return table;
    }

    /// <summary>The length table: one row per (length, method), accuracy over every depth.</summary>
    public static string TableCsv(DemoResult result)
    {
        var csv = new StringBuilder("windows,tokens,method,correct,trials,accuracy\n");
        foreach (int w in result.Settings.EvalWindows)
            foreach (var m in result.Methods)
            {
                var cells = result.Results.Where(r => r.Method == m && r.Windows == w).ToList();
                csv.Append(CultureInfo.InvariantCulture, $"{w},{w * result.Settings.Window},{m},{cells.Sum(c => c.Correct)},{cells.Sum(c => c.Trials)},{result.Accuracy(m, w):0.####}\n");
            }
        return csv.ToString();
    }

    /// <summary>Every cell: one row per (length, depth, method).</summary>
    public static string DepthCsv(DemoResult result)
    {
        var csv = new StringBuilder("windows,tokens,depth,method,correct,trials,accuracy\n");
        foreach (var r in result.Results)
            csv.Append(CultureInfo.InvariantCulture, $"{r.Windows},{r.Tokens},{r.Depth:0.##},{r.Method},{r.Correct},{r.Trials},{r.Accuracy:0.####}\n");
        return csv.ToString();
    }

    private static string Chart(DemoResult result)
    {
        var series = result.Methods.ToDictionary(m => m,
            m => result.Settings.EvalWindows.Select(w => ((double)w, result.Accuracy(m, w))).ToList());
        return SvgChart.Lines($"passkey accuracy vs context (window {result.Settings.Window} tokens)",
            $"context length (windows of {result.Settings.Window} tokens)", "passkey accuracy", series);
    }

    /// <summary>Reports on the caller's thread, in order.</summary>
    private sealed class SyncProgress(Action<DemoProgress> report) : IProgress<DemoProgress>
    {
        public void Report(DemoProgress value) => report(value);
    }
}
