namespace UioLlm.Training;

/// <summary>What one optimizer step did.</summary>
/// <param name="Step">The step just taken (1-based).</param>
/// <param name="Loss">Mean next-token cross-entropy per scored token over the step's documents.</param>
/// <param name="LearningRate">The rate the optimizer used.</param>
/// <param name="GradNorm">Global gradient norm of the per-token-mean gradient, before clipping.</param>
/// <param name="Clipped">Whether clipping scaled the gradient down.</param>
/// <param name="Documents">Documents accumulated (k).</param>
/// <param name="Tokens">Tokens whose prediction was scored.</param>
/// <param name="Seconds">Wall time of the step.</param>
public readonly record struct StepResult(int Step, double Loss, float LearningRate, float GradNorm, bool Clipped, int Documents, int Tokens, double Seconds);

/// <summary>A progress report after each step, for a front end to draw (Training itself never writes to a console).</summary>
/// <param name="Elapsed">Training time of the whole run so far, resumed sessions included.</param>
/// <param name="Eta">Estimated time to <paramref name="TotalSteps"/>, from this session's mean step time.</param>
public readonly record struct TrainingProgress(int Step, int TotalSteps, double Loss, float LearningRate, float GradNorm,
    double TokensPerSecond, TimeSpan Elapsed, TimeSpan Eta);

/// <summary>How a call to <see cref="Trainer.Run"/> ended.</summary>
/// <param name="Step">Steps completed in the whole run.</param>
/// <param name="Completed">True when the run reached its total steps.</param>
/// <param name="Checkpoint">The folder of the checkpoint written when the call stopped.</param>
public sealed record TrainingRunResult(int Step, bool Completed, string Checkpoint);
