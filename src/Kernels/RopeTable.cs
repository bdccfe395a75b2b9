namespace UioLlm.Kernels;

/// <summary>How positions are rescaled to reach beyond the pre-training context (BASELINES.md).</summary>
public enum RopeScalingKind
{
    /// <summary>Plain RoPE.</summary>
    None,
    /// <summary>Position Interpolation: every frequency divided by the factor.</summary>
    Linear,
    /// <summary>NTK-aware: base b' = b * s^(d/(d-2)).</summary>
    NtkAware,
    /// <summary>Dynamic NTK: base b' = b * (s*L_cur/L - (s-1))^(d/(d-2)), L_cur = max(length, L).</summary>
    DynamicNtk,
    /// <summary>YaRN: per-frequency ramp between interpolation and extrapolation, plus an attention factor.</summary>
    Yarn,
    /// <summary>
    /// Llama 3.1: wavelengths longer than L / low_freq_factor are divided by the factor, those shorter than
    /// L / high_freq_factor kept, and the band between blended smoothly.
    /// </summary>
    Llama3,
}

/// <summary>Which dimensions form a rotated pair.</summary>
public enum RopeLayout
{
    /// <summary>(i, i + d/2): Hugging Face "rotate_half" (GPT-NeoX) layout.</summary>
    HalfSplit,
    /// <summary>(2i, 2i + 1): Meta / llama2.c layout.</summary>
    Interleaved,
}

/// <summary>Context extension settings. <paramref name="OriginalContext"/> is the pre-training length L;
/// <paramref name="LowFreqFactor"/> and <paramref name="HighFreqFactor"/> are Llama 3's band edges (Llama3 only).</summary>
public sealed record RopeScaling(RopeScalingKind Kind, double Factor = 1.0, int OriginalContext = 4096, double BetaFast = 32, double BetaSlow = 1,
    double LowFreqFactor = 1, double HighFreqFactor = 4);

/// <summary>
/// The RoPE frequency table: one inverse frequency per rotated pair and the attention factor that
/// multiplies cos and sin (1 except for YaRN). Angles are position * inverse frequency.
/// </summary>
public sealed class RopeTable
{
    private readonly double[] inverseFrequency;

    public RopeTable(double[] inverseFrequency, RopeLayout layout, float attentionFactor = 1f)
    {
        ArgumentNullException.ThrowIfNull(inverseFrequency);
        if (inverseFrequency.Length == 0) throw new ArgumentException("a RoPE table needs at least one frequency", nameof(inverseFrequency));
        this.inverseFrequency = (double[])inverseFrequency.Clone();
        Layout = layout;
        AttentionFactor = attentionFactor;
    }

    /// <summary>Head dimension covered: twice the number of frequencies.</summary>
    public int HeadDim => 2 * inverseFrequency.Length;

    public RopeLayout Layout { get; }

    /// <summary>Multiplies cos and sin (YaRN's 0.1 ln s + 1); 1 otherwise.</summary>
    public float AttentionFactor { get; }

    public ReadOnlySpan<double> InverseFrequency => inverseFrequency;

    /// <summary>
    /// Build the table for a head dimension, RoPE base <paramref name="theta"/> and optional scaling.
    /// <paramref name="currentLength"/> is the sequence length seen so far (Dynamic NTK only).
    /// </summary>
    public static RopeTable Create(int headDim, double theta = 10000.0, RopeScaling? scaling = null,
        RopeLayout layout = RopeLayout.HalfSplit, int currentLength = 0)
    {
        if (headDim <= 0 || headDim % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "RoPE head dimension must be a positive even number");
        if (!(theta > 1.0) || double.IsInfinity(theta))
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "RoPE base must be a finite number greater than 1");
        scaling ??= new RopeScaling(RopeScalingKind.None);
        double s = scaling.Factor;
        if (scaling.Kind != RopeScalingKind.None)
        {
            if (!(s >= 1.0) || double.IsInfinity(s))
                throw new ArgumentOutOfRangeException(nameof(scaling), s, $"RoPE scaling factor for {scaling.Kind} must be a finite number >= 1");
            if (scaling.OriginalContext <= 0)
                throw new ArgumentOutOfRangeException(nameof(scaling), scaling.OriginalContext, "RoPE original context length must be positive");
        }

        int half = headDim / 2;
        double d = headDim;
        double baseTheta = scaling.Kind switch
        {
            RopeScalingKind.NtkAware => theta * Math.Pow(s, d / (d - 2)),
            RopeScalingKind.DynamicNtk => theta * Math.Pow(
                s * Math.Max(currentLength, scaling.OriginalContext) / scaling.OriginalContext - (s - 1), d / (d - 2)),
            _ => theta,
        };
        var inv = new double[half];
        for (int i = 0; i < half; i++) inv[i] = Math.Pow(baseTheta, -2.0 * i / d);

        float attention = 1f;
        switch (scaling.Kind)
        {
            case RopeScalingKind.Linear:
                for (int i = 0; i < half; i++) inv[i] /= s;
                break;
            case RopeScalingKind.Llama3:
            {
                if (!(scaling.HighFreqFactor > scaling.LowFreqFactor) || !(scaling.LowFreqFactor > 0) || double.IsInfinity(scaling.HighFreqFactor))
                    throw new ArgumentOutOfRangeException(nameof(scaling), $"Llama 3 RoPE needs 0 < low_freq_factor < high_freq_factor, got {scaling.LowFreqFactor} and {scaling.HighFreqFactor}");
                double l = scaling.OriginalContext;
                double lowWavelength = l / scaling.LowFreqFactor, highWavelength = l / scaling.HighFreqFactor;
                for (int i = 0; i < half; i++)
                {
                    double wavelength = 2 * Math.PI / inv[i];
                    if (wavelength > lowWavelength) inv[i] /= s;
                    else if (wavelength >= highWavelength)
                    {
                        double smooth = (l / wavelength - scaling.LowFreqFactor) / (scaling.HighFreqFactor - scaling.LowFreqFactor);
                        inv[i] = (1 - smooth) * inv[i] / s + smooth * inv[i];
                    }
                }
                break;
            }
            case RopeScalingKind.Yarn:
            {
                double l = scaling.OriginalContext;
                double low = Math.Floor(d * Math.Log(l / (2 * Math.PI * scaling.BetaFast)) / (2 * Math.Log(theta)));
                double high = Math.Ceiling(d * Math.Log(l / (2 * Math.PI * scaling.BetaSlow)) / (2 * Math.Log(theta)));
                low = Math.Max(low, 0);
                high = Math.Min(high, d - 1);
                if (high == low) high += 0.001;
                for (int i = 0; i < half; i++)
                {
                    double ramp = Math.Clamp((i - low) / (high - low), 0.0, 1.0);
                    inv[i] = ramp * inv[i] / s + (1 - ramp) * inv[i];
                }
                attention = s > 1 ? (float)(0.1 * Math.Log(s) + 1.0) : 1f;
                break;
            }
        }
        return new RopeTable(inv, layout, attention);
    }
}
