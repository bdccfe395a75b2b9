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
}
