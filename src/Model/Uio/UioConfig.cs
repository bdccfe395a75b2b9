namespace UioLlm.Model.Uio;

/// <summary>
/// The decoder would read positions past the base's trained context (memory rows + local tokens &gt; the
/// budget) while <see cref="UioConfig.AllowExtrapolation"/> is off. The message names the numbers.
/// </summary>
public sealed class PositionBudgetException(string message) : InvalidOperationException(message)
{
    /// <summary>The message for a decoder step that reads <paramref name="memoryRows"/> memory rows and <paramref name="localTokens"/> local tokens.</summary>
    public static PositionBudgetException For(UioConfig config, int baseContext, int memoryRows, int localTokens)
    {
        int w = config.ContextBudget(baseContext), fit = config.MaxMemorySegments(baseContext);
        return new PositionBudgetException(
            $"UIO position budget exceeded: {memoryRows} memory rows ({memoryRows / Math.Max(1, config.MemoryTokens)} segments x n = {config.MemoryTokens}) + " +
            $"{localTokens} local tokens = {memoryRows + localTokens} positions, but the base was trained on {w}; " +
            (fit >= 0
                ? $"at most {fit} segments' memories fit beside a full local window of l = {config.SegmentLength} (a context of {(long)(fit + 1) * config.SegmentLength} tokens). "
                : $"even the local window of l = {config.SegmentLength} does not fit. ") +
            "Set UioConfig.AllowExtrapolation to read untrained positions anyway, or MemoryCapSegments to keep only the newest memories.");
    }
}

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

    /// <summary>
    /// The positions the base model was trained on (its context window); 0 takes the base's own
    /// <see cref="LlamaConfig.MaxSeqLen"/>. The decoder reads [memories ; local tokens] with RoPE from 0, so
    /// memory rows + local tokens must stay within it (UIO.md, "Position budget"): see
    /// <see cref="MaxMemorySegments"/> and <see cref="MaxContextTokens"/>.
    /// </summary>
    public int TrainedContext { get; init; }

    /// <summary>
    /// Let the decoder read positions past <see cref="TrainedContext"/> (extrapolation). Off: a decoder step
    /// whose memories + local tokens exceed the budget throws <see cref="PositionBudgetException"/>.
    /// </summary>
    public bool AllowExtrapolation { get; init; }

    /// <summary>
    /// Whether memory states go through the transfer head's LoRA on W_K and W_V (the paper's design). Off (the
    /// paper's Table 6 ablation): memory keys and values come from the frozen W_K and W_V alone.
    /// </summary>
    public bool TransferHead { get; init; } = true;

    /// <summary>The context budget in positions for a base trained on <paramref name="baseContext"/> positions.</summary>
    public int ContextBudget(int baseContext) => TrainedContext > 0 ? TrainedContext : baseContext;

    /// <summary>
    /// The most segments whose memories the decoder can read while a full local window still fits the budget:
    /// floor((W - l) / n); negative when even one local window (l tokens) exceeds it.
    /// </summary>
    public int MaxMemorySegments(int baseContext)
    {
        int w = ContextBudget(baseContext);
        return w < SegmentLength ? -1 : (w - SegmentLength) / MemoryTokens;
    }

    /// <summary>
    /// The longest text (tokens) read inside the budget: (<see cref="MaxMemorySegments"/> + 1) * l, or
    /// <see cref="long.MaxValue"/> with a memory cap that fits the budget (the cap then bounds the memory).
    /// </summary>
    public long MaxContextTokens(int baseContext)
    {
        int maxSegments = MaxMemorySegments(baseContext);
        if (maxSegments < 0) return 0;
        if (MemoryCapSegments > 0 && MemoryCapSegments <= maxSegments) return long.MaxValue;
        return (long)(maxSegments + 1) * SegmentLength;
    }

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
        Require(TrainedContext >= 0, $"trained context must be >= 0 (0 = the base's), got {TrainedContext}");
        if (baseModel is not null)
        {
            Require(EncoderRank <= baseModel.Dim && TransferRank <= baseModel.Dim,
                $"LoRA ranks ({EncoderRank}, {TransferRank}) must not exceed the model width {baseModel.Dim}");
            int w = ContextBudget(baseModel.MaxSeqLen);
            if (!AllowExtrapolation)
            {
                Require(SegmentLength <= w,
                    $"the local window of l = {SegmentLength} tokens exceeds the base's trained context of {w} positions; " +
                    "choose l <= the context, or set AllowExtrapolation to read untrained positions");
                Require(MemoryCapSegments == 0 || MemoryCapSegments * MemoryTokens + SegmentLength <= w,
                    $"a memory cap of {MemoryCapSegments} segments x n = {MemoryTokens} rows + l = {SegmentLength} local tokens = " +
                    $"{MemoryCapSegments * MemoryTokens + SegmentLength} positions exceeds the base's trained context of {w}; " +
                    $"cap at most {(w - SegmentLength) / MemoryTokens} segments, or set AllowExtrapolation");
            }
        }
    }
}
