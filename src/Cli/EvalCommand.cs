using UioLlm.Training.Methods;
using System.Globalization;
using Spectre.Console;
using UioLlm.Model.Formats;
using UioLlm.Model.Methods;
using UioLlm.Training.Data.Synthetic;
using UioLlm.Training.Eval;

namespace UioLlm.Cli;

/// <summary>
/// `uio eval`: every long-context method of <see cref="MethodRegistry"/> (or a list) side by side on perplexity
/// against context length, passkey retrieval, needle in a haystack and BABILong, through the harness in
/// UioLlm.Training.Eval. Prints tables, writes a CSV and an SVG chart per task and run.json (methods with
/// their resolved options, seeds, lengths, data, machine). Knows no method by name.
/// </summary>
internal static class EvalCommand
{
    public sealed record Options(string? Model, string? Tokenizer, string? Adapter, string Methods, string Task, string? Data, string Lengths,
        string Depths, string Out, string? Template, string? Babi, string? BabiLongPrompts, string BabiLongTasks, int Trials, int Seed, int Threads,
        bool ListMethods, string? MaxMemory = null);

    public static readonly string[] Tasks = ["perplexity", "passkey", "niah", "babilong"];

    public static int Run(Options o, TextWriter output, TextWriter error) => CliSupport.Guarded("eval", error, () =>
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output) });
        TrainableMethods.RegisterForEvaluation();   // trained methods are read from --adapter
        if (o.ListMethods)
        {
            ListMethods(console);
            return 0;
        }
        if (o.Model is null) throw new UsageException("--model: give the base model (or --list-methods to see the methods)");
        if (o.Data is null) throw new UsageException("--data: give a text file (the document for perplexity, the haystack for retrieval)");
        CliSupport.RequireExists(o.Model, "--model");
        CliSupport.RequireExists(o.Data, "--data");
        var tasks = o.Task.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToList();
        if (tasks.Count == 0 || tasks.Any(t => !Tasks.Contains(t)))
            throw new UsageException($"--task must be one or more of {string.Join(", ", Tasks)} (comma-separated), got '{o.Task}'");
        var lengths = ParseLengths(o.Lengths);
        var depths = ParseDepths(o.Depths);
        CliSupport.RequirePositive(o.Trials, "--trials");
        if (o.Adapter is not null) CliSupport.RequireExists(o.Adapter, "--adapter");

        long memoryLimit = CliSupport.ParseMemory(o.MaxMemory);
        CliSupport.RequireOutputFolder(o.Out, "--out");
        using var loaded = CliSupport.Open(o.Model, o.Tokenizer, o.Threads, memoryLimitBytes: memoryLimit);
        var (model, tokenizer) = (loaded.Model, loaded.Tokenizer);
        var skipped = new List<string>();
        List<SessionFactory> methods;
        try
        {
            methods = MethodRegistry.Resolve(o.Methods, new MethodContext(model, o.Adapter), skipped.Add);
        }
        catch (MethodOptionException e)
        {
            throw new UsageException($"--methods: {e.Message}");
        }
        try
        {
            foreach (var s in skipped) console.WriteLine($"skipped {s}");
            int window = model.Config.MaxSeqLen;
            console.MarkupLineInterpolated($"uio eval: {methods.Count} method(s) on {Path.GetFileName(o.Model)} (trained window {window}), task(s) {string.Join(", ", tasks)}, seed {o.Seed}");
            Directory.CreateDirectory(o.Out);
            var written = new List<string>();
            string command = "uio eval " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1));
            foreach (string task in tasks)
            {
                var record = EvalRecord.For(task, methods, lengths, task is "passkey" or "niah" ? depths : [], task == "perplexity" ? 0 : o.Trials,
                    o.Seed, o.Model, o.Data, command);
                if (task == "perplexity")
                {
                    var text = tokenizer.Encode(File.ReadAllText(o.Data), addBos: true);
                    if (lengths.Max() > text.Length) throw new UsageException($"--lengths: {lengths.Max()} tokens asked, but --data holds only {text.Length}");
                    var cells = WithProgress(console, "perplexity", p => Evaluator.Perplexity(methods, text, lengths, p));
                    Print(console, EvalOutput.PerplexityTable(cells, window));
                    Print(console, EvalOutput.PerplexityTable(cells, window, tail: true));
                    written.Add(Save(o.Out, "perplexity.csv", EvalOutput.PerplexityCsv(cells)));
                    written.Add(Save(o.Out, "perplexity.svg", EvalOutput.PerplexitySvg(cells)));
                }
                else
                {
                    var retrieval = Task(task, o, tokenizer);
                    var cells = WithProgress(console, task, p => Evaluator.Retrieval(methods, retrieval, lengths, depths, o.Trials, o.Seed, p));
                    Print(console, EvalOutput.AccuracyByLength(task, cells, window));
                    if (retrieval.UsesDepth) Print(console, EvalOutput.AccuracyByDepth(task, cells));
                    written.Add(Save(o.Out, $"{task}.csv", EvalOutput.RetrievalCsv(cells)));
                    written.Add(Save(o.Out, $"{task}.svg", EvalOutput.AccuracySvg(task, cells)));
                }
                written.Add(Save(o.Out, $"{task}.run.json", EvalOutput.RecordJson(record)));
            }
            console.MarkupLineInterpolated($"{EvalOutput.OutOfRangeMarker.Trim()} = some query read a key beyond the method's trained range (extrapolation)");
            console.MarkupLineInterpolated($"wrote {string.Join(", ", written)}");
            return 0;
        }
        finally
        {
            foreach (var m in methods) m.Dispose();
        }
    });

    private static IRetrievalTask Task(string task, Options o, UioLlm.Model.Tokenizers.ITokenizer tokenizer)
    {
        string Shared(string? given, string option, params string[] parts) =>
            CliSupport.RequireExists(given ?? CliSupport.FindData(parts) ?? CliSupport.FindDataFolder(parts)
                ?? throw new UsageException($"{option}: give {string.Join('/', parts)} of the shared data"), option);
        switch (task)
        {
            case "passkey":
                return new PasskeyRetrieval(PasskeyTemplate.Load(Shared(o.Template, "--template", "longctx", "passkey_and_niah_templates.json")),
                    Haystack.FromFile(o.Data!), tokenizer);
            case "niah":
                return NeedleRetrieval.Load(Shared(o.Template, "--template", "longctx", "passkey_and_niah_templates.json"), Haystack.FromFile(o.Data!), tokenizer);
            default:
                var names = o.BabiLongTasks.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                try
                {
                    return new BabiLongRetrieval(Shared(o.Babi, "--babi", "longctx", "babi", "en"), Shared(o.BabiLongPrompts, "--babilong-prompts", "longctx", "babilong_prompts.json"),
                        File.ReadAllText(o.Data!), tokenizer, names);
                }
                catch (ArgumentException e) when (e.ParamName == "taskNames")
                {
                    throw new UsageException($"--babilong-tasks: {e.Message}");
                }
        }
    }

    private static T WithProgress<T>(IAnsiConsole console, string phase, Func<IProgress<EvalProgress>, T> run)
    {
        T result = default!;
        if (!console.Profile.Capabilities.Interactive)
        {
            // Redirected: a plain line now and then instead of a bar.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            double last = double.NegativeInfinity;
            result = run(new InlineProgress(p =>
            {
                if (clock.Elapsed.TotalSeconds - last < 10 && p.Done < p.Total) return;
                last = clock.Elapsed.TotalSeconds;
                console.WriteLine($"[{clock.Elapsed.TotalSeconds,7:0.0}s] {phase}: {p.Done}/{p.Total} {p.Current}");
            }));
            return result;
        }
        console.Progress().AutoClear(true).Start(ctx =>
        {
            var bar = ctx.AddTask(phase, maxValue: 1);
            result = run(new InlineProgress(p =>
            {
                bar.MaxValue = Math.Max(1, p.Total);
                bar.Value = p.Done;
                bar.Description = Markup.Escape($"{phase}: {p.Current}");
            }));
        });
        return result;
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class InlineProgress(Action<EvalProgress> report) : IProgress<EvalProgress>
    {
        public void Report(EvalProgress value) => report(value);
    }

    private static void Print(IAnsiConsole console, EvalTable t)
    {
        var table = new Table().Title(Markup.Escape(t.Title));
        foreach (var c in t.Columns) table.AddColumn(new TableColumn(Markup.Escape(c)).RightAligned());
        foreach (var row in t.Rows) table.AddRow(row.Select(Markup.Escape).ToArray());
        console.Write(table);
    }

    private static string Save(string folder, string name, string text)
    {
        string path = Path.Combine(folder, name);
        AtomicFile.WriteText(path, text);
        return path;
    }

    private static void ListMethods(IAnsiConsole console)
    {
        var table = new Table().Title("long-context methods (uio eval --methods name:option=value:...,name,...)").AddColumn("method").AddColumn("what it does").AddColumn("options (default)");
        foreach (var m in MethodRegistry.All)
            table.AddRow(Markup.Escape(m.Name), Markup.Escape(m.Summary),
                Markup.Escape(m.Options.Count == 0 ? "-" : string.Join("\n", m.Options.Select(p => $"{p.Name} ({p.Default}): {p.Meaning}"))));
        console.Write(table);
    }

    private static List<int> ParseLengths(string text)
    {
        var lengths = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string digits = part.TrimEnd('k', 'K');
            int scale = digits.Length < part.Length ? 1024 : 1;
            if (!int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1 || n > int.MaxValue / scale || n * scale < 2)
                throw new UsageException($"--lengths: '{part}' is not a length of at least 2 tokens (e.g. 512, 4k, 16k)");
            lengths.Add(n * scale);
        }
        if (lengths.Count == 0) throw new UsageException("--lengths: give at least one length, e.g. 1k,4k,16k");
        return lengths.Distinct().Order().ToList();
    }

    private static List<double> ParseDepths(string text)
    {
        var depths = new List<double>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) || !(d >= 0 && d <= 1))
                throw new UsageException($"--depths: '{part}' is not a depth in [0, 1] (e.g. 0,0.25,0.5,0.75,1)");
            depths.Add(d);
        }
        if (depths.Count == 0) throw new UsageException("--depths: give at least one depth in [0, 1]");
        return depths.Distinct().Order().ToList();
    }
}
