using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;

namespace UioLlm.Training;

/// <summary>An evaluation: named scalar metrics (e.g. "val_loss", "passkey_accuracy") measured at a step.</summary>
public delegate IReadOnlyDictionary<string, double> Evaluation(Methods.ITrainableMethod method, int step);

/// <summary>Makes the gradient estimator for one optimizer step from a seed derived from (run seed, step).</summary>
public delegate IGradientEstimator EstimatorFactory(int seed);

/// <summary>Where a trainer reports: all optional.</summary>
public sealed class TrainerCallbacks
{
    /// <summary>Receives a report after every step.</summary>
    public IProgress<TrainingProgress>? Progress { get; init; }

    /// <summary>Called every <see cref="TrainingOptions.EvalEvery"/> steps and when the run completes; its metrics go to the log.</summary>
    public Evaluation? Evaluate { get; init; }

    /// <summary>Called with the folder of each checkpoint once it is complete.</summary>
    public Action<string>? CheckpointSaved { get; init; }

    /// <summary>
    /// Data parallelism (e.g. <see cref="Distributed.DataParallelReducer"/> over MPI): deals the step's documents out
    /// and sums their gradients across processes after the backward passes; null for a single process.
    /// </summary>
    public IGradientReducer? GradientReducer { get; init; }
}
