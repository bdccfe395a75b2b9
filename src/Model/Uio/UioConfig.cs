namespace UioLlm.Model.Uio;

/// <summary>
/// The UIO memory settings (UIO.md section 1): segment length l, memory tokens n per segment (compression
/// l/n), the encoder LoRA (on W_Q and W_V) and the transfer-head LoRA (on W_K and W_V), and an optional cap
/// on kept memories (our extension; off by default: the paper keeps every memory).
/// </summary>
public sealed record UioConfig
{
    /// <summary>Tokens per compressed segment, l.</summary>
    public int SegmentLength { get; init; } = 1024;
    /// <summary>Memory tokens per segment, n (l must be a multiple).</summary>
    public int MemoryTokens { get; init; } = 128;
    public int EncoderRank { get; init; } = 128;
    public float EncoderAlpha { get; init; } = 512;
    public int TransferRank { get; init; } = 128;
    public float TransferAlpha { get; init; } = 512;
    /// <summary>Most segments' memories kept (oldest dropped first); 0 keeps them all.</summary>
    public int MemoryCapSegments { get; init; }

    /// <summary>Ordinary tokens per memory token, c = l / n.</summary>
    public int Stride => MemoryTokens > 0 ? SegmentLength / MemoryTokens : 0;

    /// <summary>Compression ratio l / n.</summary>
    public int Compression => Stride;

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that is wrong.</summary>
    public void Validate(LlamaConfig? baseModel = null)
    {
        void Require(bool ok, string what)
        {
            if (!ok) throw new ArgumentException($"UioConfig: {what} ({this})");
        }
        Require(SegmentLength >= 1, $"segment length l must be >= 1, got {SegmentLength}");
        Require(MemoryTokens >= 1, $"memory tokens n must be >= 1, got {MemoryTokens}");
        Require(MemoryTokens <= SegmentLength, $"memory tokens n ({MemoryTokens}) must not exceed the segment length l ({SegmentLength})");
        Require(SegmentLength % MemoryTokens == 0, $"segment length l ({SegmentLength}) must be divisible by memory tokens n ({MemoryTokens})");
        Require(EncoderRank >= 1 && TransferRank >= 1, $"LoRA ranks must be >= 1, got encoder {EncoderRank}, transfer {TransferRank}");
        Require(EncoderAlpha > 0 && float.IsFinite(EncoderAlpha) && TransferAlpha > 0 && float.IsFinite(TransferAlpha),
            $"LoRA alphas must be positive, got encoder {EncoderAlpha}, transfer {TransferAlpha}");
        Require(MemoryCapSegments >= 0, $"memory cap must be >= 0 (0 = no cap), got {MemoryCapSegments}");
        if (baseModel is not null)
            Require(EncoderRank <= baseModel.Dim && TransferRank <= baseModel.Dim,
                $"LoRA ranks ({EncoderRank}, {TransferRank}) must not exceed the model width {baseModel.Dim}");
    }
}
