namespace UioLlm.Training.Compare;

/// <summary>The options a trained method runs with in a comparison when none are given: fitted to the base's window, UIO's segments and the longest document.</summary>
public static class MethodSpecs
{
    /// <summary>
    /// The spec of <paramref name="name"/>: segment-wise methods read segments of <paramref name="segment"/> tokens and keep as many
    /// rows per segment as UIO's memory (<paramref name="memoryTokens"/>); full-attention fine-tunes scale RoPE by the smallest
    /// power of two that covers <paramref name="longestTokens"/>; beacons compress a segment into about <paramref name="memoryTokens"/>
    /// rows (a power of two that divides the segment). An unknown name is returned as it is.
    /// </summary>
    public static string Default(string name, int window, int segment, int memoryTokens, long longestTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(window, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(segment, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryTokens, 1);
        int factor = 1;
        while ((long)factor * window < longestTokens) factor *= 2;
        int ratio = 1;
        while (ratio * 2 <= segment / memoryTokens && segment % (ratio * 2) == 0) ratio *= 2;
        return name switch
        {
            "activation-beacon" => $"activation-beacon:window={segment}:ratio-min={ratio}:ratio-max={ratio}:ratio={ratio}",
            "rmt" => $"rmt:segment={segment}:memory={memoryTokens}",
            "transformer-xl" => $"transformer-xl:segment={segment}",
            "memorizing" or "focused-transformer" => $"{name}:segment={segment}:topk={Math.Max(1, segment / 2)}",
            "autocompressor" => $"autocompressor:segment={segment}:summary={memoryTokens}",
            "icae" => $"icae:chunk={segment}:slots={memoryTokens}:objective=lm",
            "longlora" => $"longlora:scale={factor}",
            "pi-finetune" or "yarn-finetune" or "abf-finetune" => $"{name}:factor={factor}",
            // Dilated / linear attention: the first segment one UIO segment long; the range covers the longest document.
            "longnet" => $"longnet:segment={segment}:range={factor * window}",
            "performer" => $"performer:range={factor * window}",
            _ => name,
        };
    }
}
