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
    public sealed record Options(string Out, int Seed, int Threads, bool Quick, bool Diagnose = false, string Ablation = "none");

    public const string TableFile = "passkey.csv", DepthFile = "passkey_by_depth.csv", DistanceFile = "passkey_by_distance.csv",
        DiagnosticsFile = "diagnostics.csv", ChartFile = "passkey.svg";

    /// <summary>The --ablation values and the runs they add.</summary>
    public static readonly IReadOnlyDictionary<string, DemoAblation> Ablations = new Dictionary<string, DemoAblation>
    {
        ["none"] = DemoAblation.None, ["reservoir"] = DemoAblation.Reservoir, ["transfer-head"] = DemoAblation.TransferHead, ["full-bptt"] = DemoAblation.FullBptt,
    };

    public static int Run(Options o, TextWriter output, TextWriter error) => CliSupport.Guarded("demo", error, () =>
    {
        if (o.Threads < 0) throw new UsageException($"--threads must be 0 (all cores) or a positive number, got {o.Threads}");
        if (string.IsNullOrWhiteSpace(o.Out)) throw new UsageException("--out: give a folder for the results");
        if (File.Exists(o.Out)) throw new UsageException($"--out: '{o.Out}' is a file; give a folder (it is created if missing)");
        if (!Ablations.TryGetValue(o.Ablation, out var ablation))
            throw new UsageException($"--ablation: '{o.Ablation}' is not one of {string.Join(", ", Ablations.Keys)}");
        var settings = (o.Quick ? DemoSettings.Quick : DemoSettings.Default) with { Seed = o.Seed, Threads = o.Threads, Diagnose = o.Diagnose, Ablation = ablation };
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
        if (!interactive) console.Profile.Width = 200;   // no wrapping of the tables
        var clock = Stopwatch.StartNew();
        console.MarkupLine(Markup.Escape($"uio demo{(o.Quick ? " --quick" : "")}: a {settings.Layers}-layer Llama with a {settings.Window}-token window " +
            $"(layers 0-{settings.LocalLayers - 1} local) learns to answer the number after '#' among distractor numbers; UIO memory (segments of {settings.SegmentLength}, " +
            $"{settings.SegmentLength / settings.MemoryTokens}x) is trained with truncated BPTT and with the unbiased estimator, with a distance curriculum and with the key " +
            $"always beyond S = {settings.EstimatorWindow} segments; seed {settings.Seed}"));

        var runner = new DemoRunner(settings, progress: null);   // for the phase names
        string runs = Path.GetFullPath(o.Out);
        DemoResult result;
        if (interactive)
        {
            result = null!;
            console.Progress().AutoClear(false).HideCompleted(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var tasks = runner.PhaseNames.ToDictionary(p => p, p => ctx.AddTask(Markup.Escape(p), autoStart: false, maxValue: 1));
                    result = new DemoRunner(settings, new SyncProgress(p =>
                    {
                        var task = tasks[p.Phase];
                        if (!task.IsStarted) task.StartTask();
                        task.MaxValue = p.Total;
                        task.Value = p.Done;
                        task.Description = Markup.Escape($"{p.Phase}: {p.Detail}");
                    }), runs).Run();
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
            }), runs).Run();
        }

        foreach (var phase in result.Phases)
            console.MarkupLineInterpolated($"{phase.Name}: {phase.Summary} ({phase.Elapsed.TotalSeconds:F1} s)");
        if (!result.Ceiling.Sufficient)
            console.MarkupLineInterpolated($"[yellow]the base's ceiling is {result.Ceiling.Layer0Hidden:P0} with the far part hidden from layer-0 keys, below the {DemoCeiling.Required:P0} a memory demonstration needs: no KV memory on this base can retrieve more than that[/]");
        console.Write(LengthTable(result));
        console.Write(DepthTable(result));
        console.Write(DistanceTable(result));
        if (result.Diagnostics.Count > 0) console.Write(DiagnosticsTable(result));
        foreach (var line in result.Findings()) console.MarkupLineInterpolated($"{line}");

        string csv = Path.Combine(o.Out, TableFile), byDepth = Path.Combine(o.Out, DepthFile), byDistance = Path.Combine(o.Out, DistanceFile), svg = Path.Combine(o.Out, ChartFile);
        AtomicFile.WriteText(csv, TableCsv(result));
        AtomicFile.WriteText(byDepth, DepthCsv(result));
        AtomicFile.WriteText(byDistance, DistanceCsv(result));
        AtomicFile.WriteText(svg, Chart(result));
        if (result.Diagnostics.Count > 0) AtomicFile.WriteText(Path.Combine(o.Out, DiagnosticsFile), DiagnosticsCsv(result));
        console.MarkupLineInterpolated($"wrote {csv}, {byDepth}, {byDistance}{(result.Diagnostics.Count > 0 ? ", " + Path.Combine(o.Out, DiagnosticsFile) : "")} and {svg}");
        console.MarkupLineInterpolated($"total {Minutes(clock.Elapsed)} on {result.Device}{(result.BaseFromCache ? " (base from the cache)" : "")}");
        return 0;
    });

    private static string Percent(double accuracy) => accuracy.ToString("P0", CultureInfo.InvariantCulture);

    private static string Minutes(TimeSpan t) => string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalMinutes} min {t.Seconds:00} s");

    private static Table LengthTable(DemoResult result)
    {
        var table = new Table().Title("passkey accuracy vs context length (all depths)").AddColumn("context").AddColumn("prompts", c => c.RightAligned());
        foreach (var m in result.Methods) table.AddColumn(Markup.Escape(m), c => c.RightAligned());
        foreach (int w in result.Settings.EvalWindows)
        {
            string beyond = result.BeyondBudget(w) ? " (past UIO's position budget: extrapolation)" : "";
            var row = new List<string> { Markup.Escape($"{w} x {result.Settings.Window} = {w * result.Settings.Window} tokens{beyond}"), result.Trials(result.Methods[0], w).ToString(CultureInfo.InvariantCulture) };
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

    private static Table DistanceTable(DemoResult result)
    {
        var table = new Table().Title($"passkey accuracy vs distance from the needle's segment to the question's (segments of {result.Settings.SegmentLength} tokens; S = {result.Settings.EstimatorWindow})")
            .AddColumn("distance").AddColumn("prompts", c => c.RightAligned());
        foreach (var m in result.Methods) table.AddColumn(Markup.Escape(m), c => c.RightAligned());
        foreach (int d in result.Settings.EvalDistances)
        {
            var row = new List<string> { $"{d} ({(d + 1) * result.Settings.SegmentLength} tokens)", result.Settings.DistanceTrials.ToString(CultureInfo.InvariantCulture) };
            row.AddRange(result.Methods.Select(m => Percent(result.DistanceAccuracy(m, d))));
            table.AddRow(row.ToArray());
        }
        return table;
    }

    private static Table DiagnosticsTable(DemoResult result)
    {
        var table = new Table().Title("diagnostics: attention mass on memory at the answer, per decoder layer; memory swap (memories from another document)").AddColumn("memory");
        int layers = result.Diagnostics[0].MemoryMassPerLayer.Count;
        for (int l = 0; l < layers; l++) table.AddColumn($"layer {l}", c => c.RightAligned());
        table.AddColumn("swap: own key", c => c.RightAligned()).AddColumn("swap: donor's key", c => c.RightAligned());
        foreach (var d in result.Diagnostics)
        {
            var row = new List<string> { Markup.Escape(d.Method) };
            row.AddRange(d.MemoryMassPerLayer.Select(m => m.ToString("P0", CultureInfo.InvariantCulture)));
            row.Add(Percent((double)d.SwapOwnKey / d.SwapPrompts));
            row.Add(Percent((double)d.SwapDonorKey / d.SwapPrompts));
            table.AddRow(row.ToArray());
        }
        return table;
    }

    /// <summary>The length table: one row per (length, method), accuracy over every depth.</summary>
    public static string TableCsv(DemoResult result)
    {
        var csv = new StringBuilder("windows,tokens,method,correct,trials,accuracy,beyond_budget\n");
        foreach (int w in result.Settings.EvalWindows)
            foreach (var m in result.Methods)
            {
                var cells = result.Results.Where(r => r.Method == m && r.Windows == w).ToList();
                csv.Append(CultureInfo.InvariantCulture, $"{w},{w * result.Settings.Window},{m},{cells.Sum(c => c.Correct)},{cells.Sum(c => c.Trials)},{result.Accuracy(m, w):0.####},{(result.BeyondBudget(w) ? 1 : 0)}\n");
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

    /// <summary>One row per (distance, method).</summary>
    public static string DistanceCsv(DemoResult result)
    {
        var csv = new StringBuilder("distance_segments,tokens,method,correct,trials,accuracy\n");
        foreach (var r in result.Distances)
            csv.Append(CultureInfo.InvariantCulture, $"{r.Distance},{r.Tokens},{r.Method},{r.Correct},{r.Trials},{r.Accuracy:0.####}\n");
        return csv.ToString();
    }

    /// <summary>One row per (UIO memory, layer) and the swap counts.</summary>
    public static string DiagnosticsCsv(DemoResult result)
    {
        var csv = new StringBuilder("method,layer,memory_attention_mass,swap_prompts,swap_own_key,swap_donor_key\n");
        foreach (var d in result.Diagnostics)
            for (int l = 0; l < d.MemoryMassPerLayer.Count; l++)
                csv.Append(CultureInfo.InvariantCulture, $"{d.Method},{l},{d.MemoryMassPerLayer[l]:0.####},{d.SwapPrompts},{d.SwapOwnKey},{d.SwapDonorKey}\n");
        return csv.ToString();
    }

    private static string Chart(DemoResult result)
    {
        var series = result.Methods.ToDictionary(m => m,
            m => result.Settings.EvalDistances.Select(d => ((double)d, result.DistanceAccuracy(m, d))).ToList());
        return SvgChart.Lines($"passkey accuracy vs needle distance (segments of {result.Settings.SegmentLength} tokens, window {result.Settings.Window})",
            $"segments between the needle and the question (S = {result.Settings.EstimatorWindow})", "passkey accuracy", series);
    }

    /// <summary>Reports on the caller's thread, in order.</summary>
    private sealed class SyncProgress(Action<DemoProgress> report) : IProgress<DemoProgress>
    {
        public void Report(DemoProgress value) => report(value);
    }
}
