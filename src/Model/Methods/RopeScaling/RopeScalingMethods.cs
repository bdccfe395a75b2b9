using UioLlm.Model.Modules;
using UioLlm.Kernels;

namespace UioLlm.Model.Methods;

/// <summary>
/// The RoPE tables of the context-extension methods (BASELINES.md), each exactly the model's own table at
/// scale 1 (or at the model's own base, or with no cutoff). PI, NTK-aware, dynamic NTK and YaRN come from
/// <see cref="RopeTable.Create"/>; a raised base (Llama 2 Long's ABF) and Giraffe's truncated basis are built here.
/// </summary>
public static class RopeScalingMethods
{
    /// <summary>Position Interpolation, NTK-aware, dynamic NTK or YaRN with <paramref name="factor"/> over the model's trained window.</summary>
    public static RopeTable Scaled(LlamaModel model, RopeScalingKind kind, double factor, long streamLength = 0, double betaFast = 32, double betaSlow = 1)
    {
        var c = model.Config;
        if (c.RopeScaling is not null && c.RopeScaling.Kind != RopeScalingKind.None)
            throw new NotSupportedException($"{kind} over a model that already scales RoPE ({c.RopeScaling.Kind}) is not supported: its table would not start from plain RoPE");
        var scaling = new RopeScaling(kind, factor, c.MaxSeqLen, betaFast, betaSlow);
        return RopeTable.Create(c.HeadDim, c.RopeTheta, scaling, model.Rope.Layout, (int)Math.Min(streamLength, int.MaxValue));
    }

    /// <summary>ABF: plain RoPE with base <paramref name="theta"/> instead of the model's (10,000 -> 500,000 in Llama 2 Long).</summary>
    public static RopeTable RaisedBase(LlamaModel model, double theta) =>
        RopeTable.Create(model.Config.HeadDim, theta, null, model.Rope.Layout);

    /// <summary>
    /// Giraffe's truncated basis over the model's table: a frequency theta_i >= <paramref name="high"/> is kept,
    /// one in (<paramref name="low"/>, high) becomes <paramref name="rho"/>, one &lt;= low becomes 0 (that pair is
    /// not rotated at all). high = low = 0 keeps every frequency: the model's own table.
    /// </summary>
    public static RopeTable Truncated(LlamaModel model, double low, double high, double rho)
    {
        if (!(low >= 0) || !(high >= low) || !(rho >= 0))
            throw new ArgumentOutOfRangeException(nameof(low), $"truncated RoPE needs 0 <= low <= high and rho >= 0, got low {low}, high {high}, rho {rho}");
        var baseTable = model.Rope;
        var inv = baseTable.InverseFrequency.ToArray();
        for (int i = 0; i < inv.Length; i++)
        {
            if (inv[i] >= high) continue;
            inv[i] = inv[i] > low ? rho : 0;
        }
        return new RopeTable(inv, baseTable.Layout, baseTable.AttentionFactor);
    }
}
