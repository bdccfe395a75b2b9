namespace UioLlm.Training.Demo;

/// <summary>Where the demo stands: a phase, its work done out of its total, and a short note.</summary>
public readonly record struct DemoProgress(string Phase, int Done, int Total, string Detail);

/// <summary>Passkey results of one method at one context length and needle depth.</summary>
/// <param name="Windows">Context length in base-model windows.</param>
/// <param name="Tokens">Context length in tokens (the prompt plus the answer).</param>
/// <param name="BeyondBudget">True when UIO's memories + local tokens exceed the base's window at this length (extrapolation).</param>
public sealed record DemoAccuracy(string Method, int Windows, int Tokens, double Depth, int Correct, int Trials, bool BeyondBudget = false)
{
    public double Accuracy => (double)Correct / Trials;
}

/// <summary>Passkey results of one method with the needle a given number of segments before the question's segment.</summary>
public sealed record DemoDistanceAccuracy(string Method, int Distance, int Tokens, int Correct, int Trials)
{
    public double Accuracy => (double)Correct / Trials;
}

/// <summary>One phase of the demo: its wall time and a line of what it did.</summary>
public sealed record DemoPhase(string Name, TimeSpan Elapsed, string Summary);

/// <summary>
/// What the pre-trained base can retrieve at best (MEMORY.md diagnostic 2): in-window accuracy with the needle
/// beyond the local window, and with the far part hidden from layer 0's keys (the view a KV memory gives it: its
/// layer-0 memory carries no content). A KV memory on this base can at best reach the second number.
/// </summary>
/// <param name="LayerAblation">In-window accuracy with one layer's attention output zeroed, per layer: where the copy happens.</param>
public sealed record DemoCeiling(double InWindow, double Layer0Hidden, int Prompts, IReadOnlyList<double> LayerAblation)
{
    /// <summary>The bar the issue sets for a base on which memory can be shown to work.</summary>
    public const double Required = 0.8;

    public bool Sufficient => Layer0Hidden >= Required;
}

/// <summary>The mean training loss (answer only) at the end of one curriculum stage or far-regime run.</summary>
public sealed record DemoStageLoss(string Method, int MaxDistance, int Steps, double Loss);

/// <summary>
/// The --diagnose measurements of one UIO memory: the attention mass its decoder puts on the memory prefix at the
/// answer position (mean over heads and prompts, per layer), and retrieval when the memories come from another
/// document (the answer should then follow the OTHER document's key: it really comes from memory).
/// </summary>
public sealed record DemoDiagnostics(string Method, IReadOnlyList<double> MemoryMassPerLayer, int SwapPrompts, int SwapOwnKey, int SwapDonorKey);

/// <summary>Everything the demo measured.</summary>
public sealed record DemoResult(IReadOnlyList<string> Methods, IReadOnlyList<DemoAccuracy> Results, IReadOnlyList<DemoDistanceAccuracy> Distances,
    IReadOnlyList<DemoPhase> Phases, DemoCeiling Ceiling, IReadOnlyList<DemoStageLoss> StageLosses, IReadOnlyList<DemoDiagnostics> Diagnostics,
    bool BaseFromCache, TimeSpan Elapsed, string Device, DemoSettings Settings)
{
    /// <summary>A method's accuracy at a length, over every depth and trial.</summary>
    public double Accuracy(string method, int windows)
    {
        var rows = Results.Where(r => r.Method == method && r.Windows == windows).ToList();
        if (rows.Count == 0) throw new ArgumentException($"DemoResult: no result for '{method}' at {windows} windows");
        return (double)rows.Sum(r => r.Correct) / rows.Sum(r => r.Trials);
    }

    /// <summary>Prompts behind a method's accuracy at a length.</summary>
    public int Trials(string method, int windows) => Results.Where(r => r.Method == method && r.Windows == windows).Sum(r => r.Trials);

    /// <summary>A method's accuracy at a needle-to-question distance in segments.</summary>
    public double DistanceAccuracy(string method, int distance)
    {
        var row = Distances.FirstOrDefault(r => r.Method == method && r.Distance == distance)
            ?? throw new ArgumentException($"DemoResult: no result for '{method}' at distance {distance}");
        return row.Accuracy;
    }

    /// <summary>Whether a length lies past UIO's position budget (marked in the tables).</summary>
    public bool BeyondBudget(int windows) => Settings.BeyondBudget(windows);

    /// <summary>The lengths (windows) at which the demo's target applies: UIO + unbiased at >= 80 % at 8 and 16 windows.</summary>
    public static readonly int[] TargetWindows = [8, 16];

    /// <summary>
    /// What the run shows, one line each: the main memory (unbiased, curriculum) against the target at every target
    /// length that was evaluated, and the two estimators in the far regime over the distances beyond S.
    /// </summary>
    public IReadOnlyList<string> Findings()
    {
        var lines = new List<string>();
        int s = Settings.EstimatorWindow;
        string main = new DemoUioRun(DemoEstimator.Unbiased, s, DemoRegime.Curriculum).Name;
        var windows = TargetWindows.Where(w => Settings.EvalWindows.Contains(w)).ToList();
        if (windows.Count > 0)
        {
            bool met = windows.All(w => Accuracy(main, w) >= DemoCeiling.Required);
            lines.Add($"{main}: " + string.Join(", ", windows.Select(w => $"{Accuracy(main, w):P0} at {w} windows")) +
                      $" (target {DemoCeiling.Required:P0}): {(met ? "met" : "MISSED")}");
        }
        var far = Settings.EvalDistances.Where(d => d > s).ToList();
        string tbptt = new DemoUioRun(DemoEstimator.Tbptt, s, DemoRegime.Far).Name, unbiased = new DemoUioRun(DemoEstimator.Unbiased, s, DemoRegime.Far).Name;
        if (far.Count > 0)
        {
            double Mean(string method) => far.Average(d => DistanceAccuracy(method, d));
            lines.Add($"trained with the key always more than S = {s} segments back, at distances {far[0]}-{far[^1]}: " +
                      $"TBPTT {Mean(tbptt):P0}, unbiased {Mean(unbiased):P0} (mean over distances)");
        }
        return lines;
    }
}
