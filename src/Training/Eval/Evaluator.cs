using System.Diagnostics;
using UioLlm.Model.Generation;
using UioLlm.Model.Methods;

namespace UioLlm.Training.Eval;

/// <summary>Where an evaluation stands: phase, cells done of total, and what runs now.</summary>
public sealed record EvalProgress(string Phase, int Done, int Total, string Current);

/// <summary>Perplexity of one method on the first <paramref name="Length"/> tokens.</summary>
/// <param name="Perplexity">exp(-mean log p) over tokens 1..Length-1 of the document.</param>
/// <param name="TailPerplexity">The same over the second half only (tokens Length/2..Length-1): where the context is long.</param>
/// <param name="OutOfRange">Some query read a key beyond the method's trained range (<see cref="ILongContextSession.OutOfTrainedRange"/>).</param>
/// <param name="KvBytes">Keys and values (or memory) held after the last token.</param>
public sealed record PerplexityCell(string Method, int Length, double Perplexity, double TailPerplexity, bool OutOfRange, long KvBytes, double Seconds);

/// <summary>Retrieval accuracy of one method at one length and depth (depth NaN: a task without depth).</summary>
public sealed record RetrievalCell(string Method, int Length, double Depth, int Correct, int Total, bool OutOfRange, double Seconds)
{
    public double Accuracy => Total == 0 ? double.NaN : (double)Correct / Total;
}

/// <summary>
/// The evaluation harness: runs every method (fresh session per document) over perplexity against context
/// length, and over retrieval tasks (passkey, needle in a haystack, BABILong, or any <see cref="IRetrievalTask"/>)
/// by length and depth, with greedy decoding. Deterministic for a seed; the caller prints and saves
/// (<see cref="EvalOutput"/>).
/// </summary>
public static class Evaluator
{
    /// <summary>
    /// Perplexity at each length: every method reads the document once, up to the longest length, in pieces
    /// ending at each length (so each prefix's perplexity and range marker are read on the way).
    /// </summary>
    public static List<PerplexityCell> Perplexity(IReadOnlyList<SessionFactory> methods, int[] tokens, IReadOnlyList<int> lengths,
        IProgress<EvalProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(methods);
        ArgumentNullException.ThrowIfNull(tokens);
        var sorted = lengths.Distinct().Order().ToArray();
        if (sorted.Length == 0) throw new ArgumentException("perplexity: give at least one length", nameof(lengths));
        if (sorted[0] < 2) throw new ArgumentOutOfRangeException(nameof(lengths), $"perplexity: lengths must be at least 2 tokens, got {sorted[0]}");
        if (sorted[^1] > tokens.Length)
            throw new ArgumentOutOfRangeException(nameof(lengths), $"perplexity: {sorted[^1]} tokens asked, but the document holds only {tokens.Length}");
        var cells = new List<PerplexityCell>();
        int total = methods.Count * sorted.Length, done = 0;
        foreach (var method in methods)
        {
            using var session = method.Create();
            var logProbs = new double[sorted[^1]];
            int fed = 0;
            var clock = Stopwatch.StartNew();
            foreach (int length in sorted)
            {
                cancellation.ThrowIfCancellationRequested();
                progress?.Report(new EvalProgress("perplexity", done, total, $"{method.Label}, {length} tokens"));
                session.Feed(tokens.AsSpan(fed, length - fed)).CopyTo(logProbs.AsSpan(fed));
                fed = length;
                cells.Add(new PerplexityCell(method.Label, length, LogProbs.Perplexity(logProbs.AsSpan(0, length)),
                    LogProbs.Perplexity(logProbs.AsSpan(length / 2, length - length / 2)), session.OutOfTrainedRange, session.KvBytes, clock.Elapsed.TotalSeconds));
                done++;
            }
        }
        progress?.Report(new EvalProgress("perplexity", done, total, ""));
        return cells;
    }

    /// <summary>
    /// Retrieval accuracy: for each length, depth (one pass with NaN when the task has none) and trial, a
    /// prompt from seed <c>Seeds.Derive(seed, trial)</c> (the same key at every length and depth), read by every
    /// method with <see cref="ILongContextSession.Prefill"/>, then the sample's tokens generated greedily and scored.
    /// </summary>
    public static List<RetrievalCell> Retrieval(IReadOnlyList<SessionFactory> methods, IRetrievalTask task, IReadOnlyList<int> lengths,
        IReadOnlyList<double> depths, int trials, long seed, IProgress<EvalProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(methods);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentOutOfRangeException.ThrowIfLessThan(trials, 1);
        if (lengths.Count == 0) throw new ArgumentException($"{task.Name}: give at least one length", nameof(lengths));
        double[] depthList = task.UsesDepth ? [.. depths] : [double.NaN];
        if (depthList.Length == 0) throw new ArgumentException($"{task.Name}: give at least one depth", nameof(depths));
        foreach (double d in depthList)
            if (task.UsesDepth && !(d >= 0 && d <= 1)) throw new ArgumentOutOfRangeException(nameof(depths), $"{task.Name}: depth {d} is outside [0, 1]");
        var cells = new List<RetrievalCell>();
        int total = lengths.Count * depthList.Length * trials * methods.Count, done = 0;
        foreach (int length in lengths)
            foreach (double depth in depthList)
            {
                var samples = Enumerable.Range(0, trials).Select(t => task.Sample(Seeds.Derive(seed, t), length, double.IsNaN(depth) ? 0 : depth)).ToList();
                foreach (var method in methods)
                {
                    int correct = 0;
                    bool outOfRange = false;
                    var clock = Stopwatch.StartNew();
                    foreach (var sample in samples)
                    {
                        cancellation.ThrowIfCancellationRequested();
                        progress?.Report(new EvalProgress(task.Name, done, total, $"{method.Label}, {length} tokens" + (double.IsNaN(depth) ? "" : $", depth {depth:0.##}")));
                        using var session = method.Create();
                        session.Prefill(sample.Prompt);
                        var result = session.Generate(new GenerationOptions { MaxNewTokens = sample.MaxNewTokens, Temperature = 0, StopTokens = [] });
                        if (task.IsCorrect(sample, result.Tokens)) correct++;
                        outOfRange |= session.OutOfTrainedRange;
                        done++;
                    }
                    cells.Add(new RetrievalCell(method.Label, length, depth, correct, samples.Count, outOfRange, clock.Elapsed.TotalSeconds));
                }
            }
        progress?.Report(new EvalProgress(task.Name, done, total, ""));
        return cells;
    }

    /// <summary>Accuracy per (method, length) over every depth.</summary>
    public static List<RetrievalCell> ByLength(IEnumerable<RetrievalCell> cells) =>
        cells.GroupBy(c => (c.Method, c.Length)).Select(g => new RetrievalCell(g.Key.Method, g.Key.Length, double.NaN,
            g.Sum(c => c.Correct), g.Sum(c => c.Total), g.Any(c => c.OutOfRange), g.Sum(c => c.Seconds))).ToList();

    /// <summary>Accuracy per (method, depth) over the given lengths.</summary>
    public static List<RetrievalCell> ByDepth(IEnumerable<RetrievalCell> cells) =>
        cells.GroupBy(c => (c.Method, c.Depth)).Select(g => new RetrievalCell(g.Key.Method, 0, g.Key.Depth,
            g.Sum(c => c.Correct), g.Sum(c => c.Total), g.Any(c => c.OutOfRange), g.Sum(c => c.Seconds))).ToList();
}
