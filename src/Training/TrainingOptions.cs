using System.Text.Json.Serialization;
using UioLlm.Training.Optim;

namespace UioLlm.Training;

/// <summary>
/// The hyperparameters of a training run (saved with every checkpoint, so a resumed run keeps them).
/// Defaults follow the paper: AdamW (0.9, 0.95), weight decay 0.1 on the LoRA matrices, eps 1e-8, peak lr
/// 1e-4, 1% linear warm-up then cosine to 0, global-norm clipping at 1.0, one document per step.
/// </summary>
public sealed record TrainingOptions
{
    /// <summary>Optimizer steps of the whole run (the schedule's length).</summary>
    public required int TotalSteps { get; init; }

    /// <summary>Documents whose gradients are accumulated into one optimizer step (k).</summary>
    public int DocumentsPerStep { get; init; } = 1;
    /// <summary>
    /// How many of a step's documents are computed side by side (1: one after another). Each worker beyond the first
    /// computes on its own copy of the adapter, synchronised before every step, and the gradients are summed in a
    /// fixed order, so a run is deterministic for a given worker count. Worth it where one document does not keep
    /// every core busy (small models on the CPU); ignored under a gradient reducer (data parallelism over processes).
    /// </summary>
    public int Workers { get; init; } = 1;

    public float PeakLearningRate { get; init; } = 1e-4f;

    /// <summary>Where the cosine ends at the last step.</summary>
    public float MinLearningRate { get; init; }

    /// <summary>Warm-up steps; null takes <see cref="WarmupFraction"/> of <see cref="TotalSteps"/>.</summary>
    public int? WarmupSteps { get; init; }

    public double WarmupFraction { get; init; } = 0.01;

    public float Beta1 { get; init; } = 0.9f;
    public float Beta2 { get; init; } = 0.95f;
    public float Epsilon { get; init; } = 1e-8f;

    /// <summary>Decoupled weight decay on the LoRA matrices (never on the memory embedding).</summary>
    public float WeightDecay { get; init; } = 0.1f;

    /// <summary>Global gradient-norm cap; +infinity turns clipping off.</summary>
    public float MaxGradNorm { get; init; } = 1f;

    /// <summary>Write a checkpoint every this many steps (0: only when the run stops).</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>Keep only the newest this many checkpoints (0: keep all).</summary>
    public int KeepCheckpoints { get; init; }

    /// <summary>Call the evaluation callback every this many steps (0: never).</summary>
    public int EvalEvery { get; init; }

    /// <summary>The run seed: the estimator of step s gets the seed <see cref="Seeds.Derive"/>(Seed, s).</summary>
    public int Seed { get; init; }

    /// <summary>Recorded in the saved adapters' adapter_config.json (base_model_name_or_path); may be null.</summary>
    public string? BaseModelNameOrPath { get; init; }

    /// <summary>Warm-up steps after resolving <see cref="WarmupFraction"/>.</summary>
    [JsonIgnore]
    public int ResolvedWarmupSteps => WarmupSteps ?? WarmupCosineSchedule.WarmupStepsFor(WarmupFraction, TotalSteps);

    /// <summary>The optimizer settings these options describe.</summary>
    public AdamWSettings Optimizer() => new(Beta1, Beta2, Epsilon, WeightDecay);

    /// <summary>The learning-rate schedule these options describe.</summary>
    public WarmupCosineSchedule Schedule() => new(PeakLearningRate, TotalSteps, ResolvedWarmupSteps, MinLearningRate);

    /// <summary>Throws ArgumentException naming the first invalid field.</summary>
    public void Validate()
    {
        if (TotalSteps < 1) throw new ArgumentOutOfRangeException(nameof(TotalSteps), TotalSteps, "training: TotalSteps must be >= 1");
        if (DocumentsPerStep < 1) throw new ArgumentOutOfRangeException(nameof(DocumentsPerStep), DocumentsPerStep, "training: DocumentsPerStep must be >= 1");
        if (Workers < 1) throw new ArgumentOutOfRangeException(nameof(Workers), Workers, "training: Workers must be >= 1");
        if (!(MaxGradNorm > 0f)) throw new ArgumentOutOfRangeException(nameof(MaxGradNorm), MaxGradNorm, "training: MaxGradNorm must be positive (+infinity for no clipping)");
        if (CheckpointEvery < 0) throw new ArgumentOutOfRangeException(nameof(CheckpointEvery), CheckpointEvery, "training: CheckpointEvery must be >= 0 (0: only at the end)");
        if (KeepCheckpoints < 0) throw new ArgumentOutOfRangeException(nameof(KeepCheckpoints), KeepCheckpoints, "training: KeepCheckpoints must be >= 0 (0: keep all)");
        if (EvalEvery < 0) throw new ArgumentOutOfRangeException(nameof(EvalEvery), EvalEvery, "training: EvalEvery must be >= 0 (0: never)");
        Optimizer().Validate();
        Schedule();
    }
}
