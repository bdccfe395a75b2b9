using UioLlm.Kernels;

namespace UioLlm.Training;

/// <summary>A step's (or one document's) loss sum, scored segments and tokens, as the trainer counts them.</summary>
public readonly record struct StepTotals(double LossSum, int Segments, int Tokens);

/// <summary>
/// Makes one optimizer step out of several processes' work (data parallelism). The trainer deals a step's k
/// documents out with <see cref="Computes"/> (every process still draws all k, so data positions stay equal),
/// reports each document it computed with <see cref="DocumentDone"/>, and after the last one calls
/// <see cref="Reduce"/>, which leaves the whole step's gradient sum and totals on every process; each process
/// then clips and takes the same optimizer step, so parameters stay identical without being sent. Only the
/// process with <see cref="WritesRunFiles"/> writes metrics and checkpoints.
/// </summary>
public interface IGradientReducer
{
    /// <summary>This process's index, 0 .. <see cref="Size"/> - 1.</summary>
    int Rank { get; }

    /// <summary>Number of processes sharing each step.</summary>
    int Size { get; }

    /// <summary>Whether this process writes the run's metrics and checkpoints (exactly one does).</summary>
    bool WritesRunFiles { get; }

    /// <summary>Whether this process computes document <paramref name="document"/> (0 .. k-1) of a step.</summary>
    bool Computes(int document);

    /// <summary>Called after this process added document <paramref name="document"/>'s gradient to <paramref name="gradients"/>.</summary>
    void DocumentDone(int document, IReadOnlyList<Tensor> gradients, StepTotals totals);

    /// <summary>
    /// After the step's last document: turns this process's <paramref name="gradients"/> (in place) and
    /// <paramref name="local"/> totals into those of all <paramref name="documents"/> documents of the step,
    /// identical on every process.
    /// </summary>
    StepTotals Reduce(IReadOnlyList<Tensor> gradients, StepTotals local, int documents);
}
