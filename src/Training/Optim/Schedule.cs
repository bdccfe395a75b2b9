namespace UioLlm.Training.Optim;

/// <summary>
/// Learning rate per optimizer step s = 1..TotalSteps: a linear warm-up reaching the peak at step
/// <see cref="WarmupSteps"/> (lr = peak * s / W), then a half cosine from the peak down to
/// <see cref="MinLearningRate"/> at the last step: lr = min + (peak - min) * (1 + cos(pi * (s - W) / (S - W))) / 2.
/// </summary>
public sealed class WarmupCosineSchedule
{
    /// <param name="peakLearningRate">The rate at the end of the warm-up.</param>
    /// <param name="totalSteps">S, the optimizer steps of the whole run.</param>
    /// <param name="warmupSteps">W in [0, S]; 0 starts at the peak.</param>
    /// <param name="minLearningRate">Where the cosine ends (0 by default), at most the peak.</param>
    public WarmupCosineSchedule(float peakLearningRate, int totalSteps, int warmupSteps, float minLearningRate = 0f)
    {
        if (!(peakLearningRate > 0f) || !float.IsFinite(peakLearningRate))
            throw new ArgumentOutOfRangeException(nameof(peakLearningRate), peakLearningRate, "schedule: the peak learning rate must be a positive finite number");
        if (totalSteps < 1)
            throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "schedule: total steps must be >= 1");
        if (warmupSteps < 0 || warmupSteps > totalSteps)
            throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, $"schedule: warm-up steps must lie in [0, {totalSteps}] (the total)");
        if (!(minLearningRate >= 0f && minLearningRate <= peakLearningRate))
            throw new ArgumentOutOfRangeException(nameof(minLearningRate), minLearningRate, $"schedule: the minimum learning rate must lie in [0, {peakLearningRate}] (the peak)");
        PeakLearningRate = peakLearningRate;
        TotalSteps = totalSteps;
        WarmupSteps = warmupSteps;
        MinLearningRate = minLearningRate;
    }

    /// <summary>Warm-up steps for a fraction of the run: round(fraction * total), at least 1 when the fraction is positive.</summary>
    public static int WarmupStepsFor(double fraction, int totalSteps)
    {
        if (!(fraction >= 0 && fraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "schedule: the warm-up fraction must lie in [0, 1]");
        if (fraction == 0) return 0;
        return Math.Clamp((int)Math.Round(fraction * totalSteps, MidpointRounding.AwayFromZero), 1, totalSteps);
    }

    public float PeakLearningRate { get; }
    public int TotalSteps { get; }
    public int WarmupSteps { get; }
    public float MinLearningRate { get; }

    /// <summary>The learning rate of optimizer step <paramref name="step"/> (1-based).</summary>
    public float At(int step)
    {
        if (step < 1 || step > TotalSteps)
            throw new ArgumentOutOfRangeException(nameof(step), step, $"schedule: step must lie in [1, {TotalSteps}]");
        if (step <= WarmupSteps) return (float)((double)PeakLearningRate * step / WarmupSteps);
        int decaySteps = TotalSteps - WarmupSteps;
        double progress = (double)(step - WarmupSteps) / decaySteps;
        return (float)(MinLearningRate + (PeakLearningRate - MinLearningRate) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}
