using System.Globalization;
using System.Text;
using Spectre.Console;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Baselines;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Model.Uio;
using UioLlm.Training.Data.Synthetic;

namespace UioLlm.Cli;

/// <summary>
/// `uio eval`: perplexity or passkey accuracy versus context length, for the base model alone (its own
/// window: longer inputs are read window by window, forgetting the rest) and, with --adapter, through UIO's
/// compressed memory. Writes a table, a CSV and an SVG chart.
/// </summary>
internal static class EvalCommand
{
    public sealed record Options(string Model, string? Tokenizer, string? Adapter, string Task, string Data, string Lengths, string Out,
        string? Template, int Trials, int Seed, int Threads, string? MaxMemory = null);

    public static int Run(Options o, TextWriter output, TextWriter error) => CliSupport.Guarded("eval", error, () =>
    {
        CliSupport.RequireExists(o.Model, "--model");
        CliSupport.RequireExists(o.Data, "--data");
        if (o.Task is not ("perplexity" or "passkey")) throw new UsageException($"--task must be perplexity or passkey, got '{o.Task}'");
        var lengths = ParseLengths(o.Lengths);
        CliSupport.RequirePositive(o.Trials, "--trials");
        long memoryLimit = CliSupport.ParseMemory(o.MaxMemory);
        CliSupport.RequireOutputFolder(o.Out, "--out");
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output) });
        using var loaded = CliSupport.Open(o.Model, o.Tokenizer, o.Threads, memoryLimit);
        var (model, tokenizer) = (loaded.Model, loaded.Tokenizer);
        using var uio = o.Adapter is null ? null : UioAdapter.Load(model, CliSupport.RequireExists(o.Adapter, "--adapter"));

        int streamingWindow = Math.Max(1, model.Config.MaxSeqLen - StreamingSinks);
        var methods = new List<string> { $"base (window {model.Config.MaxSeqLen})", $"StreamingLLM ({StreamingSinks} sinks + {streamingWindow})" };
        if (uio is not null) methods.Add($"UIO {uio.Config.Compression}x");
        var results = methods.ToDictionary(m => m, _ => new List<(double X, double Y)>());
        string metric = o.Task == "perplexity" ? "perplexity" : "passkey accuracy";

        StreamingLlm NewStreaming() => new(model, streamingWindow, StreamingSinks);
        console.Progress().AutoClear(true).Start(ctx =>
        {
            var task = ctx.AddTask(metric, maxValue: lengths.Count * methods.Count);
            if (o.Task == "perplexity")
            {
                var ids = tokenizer.Encode(File.ReadAllText(o.Data), addBos: true);
                foreach (int length in lengths)
                {
                    if (length > ids.Length) throw new UsageException($"--lengths: {length} tokens asked, but --data holds only {ids.Length}");
                    var text = ids.AsSpan(0, length).ToArray();
                    results[methods[0]].Add((length, Perplexity(BaseLogProbs(model, text))));
                    task.Increment(1);
                    using (var streaming = NewStreaming())
                        results[methods[1]].Add((length, Perplexity(streaming.Feed(text))));
                    task.Increment(1);
                    if (uio is not null)
                    {
                        using var session = new UioSession(uio);
                        results[methods[2]].Add((length, Perplexity(session.Feed(text))));
                        task.Increment(1);
                    }
                }
            }
            else
            {
                string templatePath = o.Template ?? CliSupport.FindData("longctx", "passkey_and_niah_templates.json")
                    ?? throw new UsageException("--template: give the passkey template file (longctx/passkey_and_niah_templates.json of the shared data)");
                var passkey = new PasskeyTask(PasskeyTemplate.Load(CliSupport.RequireExists(templatePath, "--template")), Haystack.FromFile(o.Data), tokenizer);
                foreach (int length in lengths)
                {
                    var samples = Enumerable.Range(0, o.Trials)
                        .Select(i => passkey.Generate(o.Seed * 1000 + i, length, (i + 0.5) / o.Trials)).ToList();
                    results[methods[0]].Add((length, samples.Count(s => BaseAnswers(model, tokenizer, s)) / (double)samples.Count));
                    task.Increment(1);
                    results[methods[1]].Add((length, samples.Count(s => StreamingAnswers(NewStreaming, tokenizer, s)) / (double)samples.Count));
                    task.Increment(1);
                    if (uio is not null)
                    {
                        results[methods[2]].Add((length, samples.Count(s => UioAnswers(uio, tokenizer, s)) / (double)samples.Count));
                        task.Increment(1);
                    }
                }
            }
        });

        var table = new Table().AddColumn("context");
        foreach (var m in methods) table.AddColumn(Markup.Escape(m));
        var csv = new StringBuilder($"context,method,{metric.Replace(' ', '_')}\n");
        foreach (int length in lengths)
        {
            var row = new List<string> { length.ToString(CultureInfo.InvariantCulture) };
            foreach (var m in methods)
            {
                double v = results[m].First(p => p.X == length).Y;
                row.Add(v.ToString("0.###", CultureInfo.InvariantCulture));
                csv.Append(CultureInfo.InvariantCulture, $"{length},{m},{v:0.######}\n");
            }
            table.AddRow(row.ToArray());
        }
        console.Write(table);
        Directory.CreateDirectory(o.Out);
        string csvPath = Path.Combine(o.Out, $"{o.Task}.csv"), svgPath = Path.Combine(o.Out, $"{o.Task}.svg");
        AtomicFile.WriteText(csvPath, csv.ToString());
        AtomicFile.WriteText(svgPath, SvgChart.Lines($"{metric} vs context length", "context (tokens)", metric, results));
        console.MarkupLineInterpolated($"wrote {csvPath} and {svgPath}");
        return 0;
    });

    private static List<int> ParseLengths(string text)
    {
        var lengths = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string digits = part.TrimEnd('k', 'K');
            int scale = digits.Length < part.Length ? 1024 : 1;
            if (!int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n <= 0 || n > int.MaxValue / scale)
                throw new UsageException($"--lengths: '{part}' is not a positive length (e.g. 512, 4k, 16k)");
            lengths.Add(n * scale);
        }
        if (lengths.Count == 0) throw new UsageException("--lengths: give at least one length, e.g. 1k,4k,16k");
        return lengths;
    }

    private static double Perplexity(double[] logProbs)
    {
        // NaN marks a token without context (the first of a window); a non-finite score of a token that had
        // context never gets here (scoring throws a NonFiniteException).
        var scored = logProbs.Where(double.IsFinite).ToArray();
        if (scored.Length == 0)
            throw new UsageException($"--lengths: a context of {logProbs.Length} token(s) leaves no token to score; use lengths of at least 2");
        return Math.Exp(-scored.Average());
    }

    /// <summary>Log-probs from the base model reading the text window by window (each window starts fresh).</summary>
    private static double[] BaseLogProbs(LlamaModel model, int[] text)
    {
        int window = model.Config.MaxSeqLen, vocab = model.Config.VocabSize;
        var result = new double[text.Length];
        result[0] = double.NaN;
        for (int start = 0; start < text.Length; start += window)
        {
            int n = Math.Min(window, text.Length - start);
            using var tape = new Tape(model.Accelerator);
            using var _ = tape.NoGrad();
            var logits = model.Forward(tape, text.AsSpan(start, n)).Value.ToArray();
            for (int t = 1; t < n; t++) result[start + t] = UioSession.LogSoftmaxAt(logits.AsSpan((t - 1) * vocab, vocab), text[start + t]);
            if (start > 0) result[start] = double.NaN;   // the first token of a window has no context
        }
        return result;
    }

    private static int[] Prompt(ITokenizer tokenizer, PasskeySample sample) => tokenizer.Encode(sample.Prompt, addBos: true);

    private static bool Correct(ITokenizer tokenizer, int[] generated, PasskeySample sample) =>
        tokenizer.Decode(generated).Contains(sample.Answer, StringComparison.Ordinal);

    /// <summary>The base model sees only the last window of the prompt.</summary>
    private static bool BaseAnswers(LlamaModel model, ITokenizer tokenizer, PasskeySample sample)
    {
        var ids = Prompt(tokenizer, sample);
        int budget = Answer(tokenizer, sample);
        int keep = Math.Min(ids.Length, model.Config.MaxSeqLen - budget);
        var result = new Generator(model).Generate(ids.AsSpan(ids.Length - keep),
            new GenerationOptions { MaxNewTokens = budget, Temperature = 0, StopTokens = [] });
        return Correct(tokenizer, result.Tokens, sample);
    }

    private const int StreamingSinks = 4;

    /// <summary>StreamingLLM reads the whole prompt through its sinks + rolling window, then answers greedily.</summary>
    private static bool StreamingAnswers(Func<StreamingLlm> create, ITokenizer tokenizer, PasskeySample sample)
    {
        using var streaming = create();
        streaming.Feed(Prompt(tokenizer, sample));
        var generated = new List<int>();
        for (int i = 0; i < Answer(tokenizer, sample); i++)
        {
            NonFiniteException.ThrowIfAny(streaming.LastLogits, "StreamingLLM answer");
            int next = Sampler.ArgMax(streaming.LastLogits);
            generated.Add(next);
            streaming.Feed([next]);
        }
        return Correct(tokenizer, generated.ToArray(), sample);
    }

    private static bool UioAnswers(UioModel uio, ITokenizer tokenizer, PasskeySample sample)
    {
        using var session = new UioSession(uio);
        session.Prefill(Prompt(tokenizer, sample));
        var result = session.Generate(new GenerationOptions { MaxNewTokens = Answer(tokenizer, sample), Temperature = 0, StopTokens = [] });
        return Correct(tokenizer, result.Tokens, sample);
    }

    /// <summary>Tokens to generate: the answer's length plus a little room.</summary>
    private static int Answer(ITokenizer tokenizer, PasskeySample sample) => tokenizer.Encode(" " + sample.Answer).Length + 2;
}
