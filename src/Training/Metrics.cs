using System.Globalization;
using System.Text.Json;
using System.Text;
using UioLlm.Model.Formats;

namespace UioLlm.Training;

/// <summary>
/// The run's metric logs, in the run folder:
/// <list type="bullet">
/// <item><c>metrics.jsonl</c>: one JSON object per line, either
/// <c>{"type":"step","step":..,"loss":..,"lr":..,"grad_norm":..,"clipped":..,"documents":..,"tokens":..,"seconds":..,"tokens_per_s":..,"elapsed_s":..}</c>
/// or <c>{"type":"eval","step":..,"metrics":{"name":value,..}}</c>; a non-finite number is written as null.</item>
/// <item><c>metrics.csv</c>: the step lines as a table with a header.</item>
/// <item><c>eval.csv</c>: the eval lines in long form (step,metric,value).</item>
/// </list>
/// Lines are appended and flushed one at a time. When a run resumes from step s, lines for steps after s (from
/// the interrupted session) and any torn last line are dropped first, so each step appears once.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    public const string JsonFileName = "metrics.jsonl";
    public const string CsvFileName = "metrics.csv";
    public const string EvalCsvFileName = "eval.csv";
    private const string CsvHeader = "step,loss,lr,grad_norm,clipped,documents,tokens,seconds,tokens_per_s,elapsed_s";
    private const string EvalCsvHeader = "step,metric,value";

    private readonly StreamWriter json, csv, evalCsv;

    /// <param name="runFolder">The run folder (created if missing).</param>
    /// <param name="resumeStep">Null for a new run (existing logs are an error); else keep lines up to this step and append.</param>
    public MetricsLog(string runFolder, int? resumeStep)
    {
        ArgumentException.ThrowIfNullOrEmpty(runFolder);
        Directory.CreateDirectory(runFolder);
        JsonPath = Path.Combine(runFolder, JsonFileName);
        CsvPath = Path.Combine(runFolder, CsvFileName);
        EvalCsvPath = Path.Combine(runFolder, EvalCsvFileName);
        if (resumeStep is int step)
        {
            KeepUpTo(JsonPath, null, step, JsonLineStep);
            KeepUpTo(CsvPath, CsvHeader, step, CsvLineStep);
            KeepUpTo(EvalCsvPath, EvalCsvHeader, step, CsvLineStep);
        }
        else
        {
            if (File.Exists(JsonPath))
                throw new IOException($"{JsonPath}: the run folder already holds a run's metrics; resume that run or choose another folder");
            AtomicFile.WriteText(JsonPath, "");
            AtomicFile.WriteText(CsvPath, CsvHeader + "\n");
            AtomicFile.WriteText(EvalCsvPath, EvalCsvHeader + "\n");
        }
        json = Append(JsonPath);
        csv = Append(CsvPath);
        evalCsv = Append(EvalCsvPath);
    }

    public string JsonPath { get; }
    public string CsvPath { get; }
    public string EvalCsvPath { get; }

    public void WriteStep(StepResult r, TimeSpan elapsed)
    {
        double tokensPerSecond = r.Seconds > 0 ? r.Tokens / r.Seconds : 0;
        WriteLine(json, JsonLine(w =>
        {
            w.WriteString("type", "step");
            w.WriteNumber("step", r.Step);
            Number(w, "loss", r.Loss);
            Number(w, "lr", r.LearningRate);
            Number(w, "grad_norm", r.GradNorm);
            w.WriteBoolean("clipped", r.Clipped);
            w.WriteNumber("documents", r.Documents);
            w.WriteNumber("tokens", r.Tokens);
            Number(w, "seconds", r.Seconds);
            Number(w, "tokens_per_s", tokensPerSecond);
            Number(w, "elapsed_s", elapsed.TotalSeconds);
        }));
        WriteLine(csv, string.Join(",", Inv(r.Step), Inv(r.Loss), Inv(r.LearningRate), Inv(r.GradNorm), r.Clipped ? "1" : "0",
            Inv(r.Documents), Inv(r.Tokens), Inv(r.Seconds), Inv(tokensPerSecond), Inv(elapsed.TotalSeconds)));
    }

    public void WriteEval(int step, IReadOnlyDictionary<string, double> metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        WriteLine(json, JsonLine(w =>
        {
            w.WriteString("type", "eval");
            w.WriteNumber("step", step);
            w.WriteStartObject("metrics");
            foreach (var (name, value) in metrics) Number(w, name, value);
            w.WriteEndObject();
        }));
        foreach (var (name, value) in metrics)
            WriteLine(evalCsv, $"{Inv(step)},{CsvField(name)},{Inv(value)}");
    }

    public void Dispose()
    {
        json.Dispose();
        csv.Dispose();
        evalCsv.Dispose();
    }

    private static StreamWriter Append(string path) =>
        new(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));

    private static void WriteLine(StreamWriter writer, string line)
    {
        writer.Write(line + "\n");
        writer.Flush();
    }

    private static string JsonLine(Action<Utf8JsonWriter> body)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>JSON has no NaN or infinity: those are written as null.</summary>
    private static void Number(Utf8JsonWriter w, string name, double value)
    {
        if (double.IsFinite(value)) w.WriteNumber(name, value);
        else w.WriteNull(name);
    }

    private static string Inv(double value) => value.ToString("R", CultureInfo.InvariantCulture);
    private static string Inv(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static string CsvField(string text) =>
        text.IndexOfAny([',', '"', '\n', '\r']) < 0 ? text : "\"" + text.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>Rewrites a log keeping the header (if any) and the whole lines whose step is at most <paramref name="step"/>.</summary>
    private static void KeepUpTo(string path, string? header, int step, Func<string, int?> stepOf)
    {
        var kept = new StringBuilder();
        if (header is not null) kept.Append(header).Append('\n');
        if (File.Exists(path))
        {
            string text = File.ReadAllText(path);
            // A last line without its newline was torn by the interruption: drop it.
            var lines = text.Split('\n');
            for (int i = 0; i < lines.Length - 1; i++)
                if (stepOf(lines[i]) is int s && s <= step) kept.Append(lines[i]).Append('\n');
        }
        AtomicFile.WriteText(path, kept.ToString());
    }

    private static int? JsonLineStep(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            return doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("step", out var s) && s.TryGetInt32(out int step) ? step : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static int? CsvLineStep(string line)
    {
        int comma = line.IndexOf(',');
        return comma > 0 && int.TryParse(line.AsSpan(0, comma), NumberStyles.None, CultureInfo.InvariantCulture, out int step) ? step : null;
    }
}
