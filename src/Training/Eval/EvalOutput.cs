using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using UioLlm.Model.Methods;

namespace UioLlm.Training.Eval;

/// <summary>A table as plain strings: a title, column headers, rows. The command line draws it; tests read it.</summary>
public sealed record EvalTable(string Title, IReadOnlyList<string> Columns, IReadOnlyList<IReadOnlyList<string>> Rows);

/// <summary>What an evaluation ran, so it can be reproduced: methods with resolved options, task settings, seeds, model, data, machine.</summary>
public sealed record EvalRecord(string Task, IReadOnlyList<EvalMethodRecord> Methods, IReadOnlyList<int> Lengths, IReadOnlyList<double> Depths,
    int Trials, long Seed, string Model, string Data, string Machine, string Command)
{
    public static EvalRecord For(string task, IEnumerable<SessionFactory> methods, IReadOnlyList<int> lengths, IReadOnlyList<double> depths,
        int trials, long seed, string model, string data, string command) =>
        new(task, methods.Select(m => new EvalMethodRecord(m.Label, m.Method, m.Options)).ToList(), lengths, depths, trials, seed, model, data,
            EvalOutput.Machine(), command);
}

public sealed record EvalMethodRecord(string Label, string Method, IReadOnlyDictionary<string, string> Options);

/// <summary>Tables, CSV, SVG charts and the run record of an evaluation.</summary>
public static class EvalOutput
{
    private static string F(double v, string format) => double.IsFinite(v) ? v.ToString(format, CultureInfo.InvariantCulture) : "n/a";

    /// <summary>Marker appended to a value measured out of the method's trained range.</summary>
    public const string OutOfRangeMarker = " *";

    public static string LengthLabel(int tokens, int window) =>
        tokens % window == 0 ? $"{tokens} ({tokens / window}x)" : $"{tokens} ({(double)tokens / window:0.##}x)";

    /// <summary>Methods as rows, lengths as columns (a value with <see cref="OutOfRangeMarker"/> was measured out of range).</summary>
    public static EvalTable PerplexityTable(IReadOnlyList<PerplexityCell> cells, int window, bool tail = false)
    {
        var lengths = cells.Select(c => c.Length).Distinct().Order().ToList();
        var rows = cells.Select(c => c.Method).Distinct().Select(m => (IReadOnlyList<string>)
            [m, .. lengths.Select(length => cells.First(c => c.Method == m && c.Length == length))
                .Select(c => F(tail ? c.TailPerplexity : c.Perplexity, "0.00") + (c.OutOfRange ? OutOfRangeMarker : ""))]).ToList();
        return new EvalTable(tail ? "perplexity of the second half of the first N tokens" : "perplexity of the first N tokens",
            ["method", .. lengths.Select(l => LengthLabel(l, window))], rows);
    }

    public static EvalTable AccuracyByLength(string task, IReadOnlyList<RetrievalCell> cells, int window)
    {
        var byLength = Evaluator.ByLength(cells);
        var lengths = byLength.Select(c => c.Length).Distinct().Order().ToList();
        var rows = byLength.Select(c => c.Method).Distinct().Select(m => (IReadOnlyList<string>)
            [m, .. lengths.Select(length => byLength.First(c => c.Method == m && c.Length == length))
                .Select(c => F(100 * c.Accuracy, "0") + " %" + (c.OutOfRange ? OutOfRangeMarker : ""))]).ToList();
        return new EvalTable($"{task} accuracy vs context length (tokens)", ["method", .. lengths.Select(l => LengthLabel(l, window))], rows);
    }

    public static EvalTable AccuracyByDepth(string task, IReadOnlyList<RetrievalCell> cells)
    {
        var byDepth = Evaluator.ByDepth(cells);
        var depths = byDepth.Select(c => c.Depth).Distinct().Order().ToList();
        var rows = byDepth.Select(c => c.Method).Distinct().Select(m => (IReadOnlyList<string>)
            [m, .. depths.Select(depth => byDepth.First(c => c.Method == m && c.Depth.Equals(depth)))
                .Select(c => F(100 * c.Accuracy, "0") + " %" + (c.OutOfRange ? OutOfRangeMarker : ""))]).ToList();
        return new EvalTable($"{task} accuracy vs needle depth (all lengths)", ["method", .. depths.Select(d => "depth " + F(d, "0.##"))], rows);
    }

    /// <summary>The table as GitHub markdown (for READMEs and notes).</summary>
    public static string Markdown(EvalTable t)
    {
        var md = new StringBuilder();
        md.Append("| ").Append(string.Join(" | ", t.Columns)).Append(" |\n");
        md.Append('|').Append(string.Concat(t.Columns.Select(_ => "---|"))).Append('\n');
        foreach (var row in t.Rows) md.Append("| ").Append(string.Join(" | ", row)).Append(" |\n");
        return md.ToString();
    }

    public static string PerplexityCsv(IEnumerable<PerplexityCell> cells)
    {
        var csv = new StringBuilder("length,method,perplexity,tail_perplexity,out_of_trained_range,kv_bytes,seconds\n");
        foreach (var c in cells)
            csv.Append(CultureInfo.InvariantCulture, $"{c.Length},{Quote(c.Method)},{c.Perplexity:0.######},{c.TailPerplexity:0.######},{(c.OutOfRange ? 1 : 0)},{c.KvBytes},{c.Seconds:0.###}\n");
        return csv.ToString();
    }

    public static string RetrievalCsv(IEnumerable<RetrievalCell> cells)
    {
        var csv = new StringBuilder("length,depth,method,correct,total,accuracy,out_of_trained_range,seconds\n");
        foreach (var c in cells)
            csv.Append(CultureInfo.InvariantCulture, $"{c.Length},{(double.IsNaN(c.Depth) ? "" : c.Depth.ToString("0.###", CultureInfo.InvariantCulture))},{Quote(c.Method)},{c.Correct},{c.Total},{c.Accuracy:0.####},{(c.OutOfRange ? 1 : 0)},{c.Seconds:0.###}\n");
        return csv.ToString();
    }

    public static string PerplexitySvg(IReadOnlyList<PerplexityCell> cells) =>
        SvgChart.Lines("perplexity vs context length", "context (tokens)", "perplexity (log scale)",
            cells.GroupBy(c => c.Method).ToDictionary(g => g.Key, g => g.Select(c => ((double)c.Length, c.Perplexity)).ToList()), logX: true, logY: true);

    public static string AccuracySvg(string task, IReadOnlyList<RetrievalCell> cells) =>
        SvgChart.Lines($"{task} accuracy vs context length", "context (tokens)", "accuracy (%)",
            Evaluator.ByLength(cells).GroupBy(c => c.Method).ToDictionary(g => g.Key, g => g.Select(c => ((double)c.Length, 100 * c.Accuracy)).ToList()));

    public static string RecordJson(EvalRecord record) =>
        JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals });

    /// <summary>The machine in one line: CPU model (from /proc/cpuinfo where there is one), cores, OS, .NET.</summary>
    public static string Machine()
    {
        string cpu = RuntimeInformation.ProcessArchitecture.ToString();
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        return $"{cpu}, {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, .NET {Environment.Version}";
    }

    /// <summary>A CSV cell: quoted (inner quotes doubled) when it holds a comma or a quote.</summary>
    public static string Quote(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
