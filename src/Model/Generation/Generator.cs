using System.Diagnostics;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Generation;

/// <summary>How to generate: a token budget, sampling settings and the tokens that end generation.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate after the prompt.</summary>
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>0 = greedy.</summary>
    public float Temperature { get; init; }
    public float TopP { get; init; } = 1f;
    public int Seed { get; init; }
    /// <summary>Tokens that stop generation (not emitted); null = the model's EOS.</summary>
    public IReadOnlyCollection<int>? StopTokens { get; init; }
}

public enum StopReason { StopToken, TokenLimit, ContextFull, Cancelled }

/// <summary>The generated tokens (prompt excluded), why generation stopped, and how long each phase took.</summary>
public sealed record GenerationResult(int[] Tokens, StopReason Reason, int PromptTokens, TimeSpan Prefill, TimeSpan Decode)
{
    /// <summary>Decode speed: tokens generated after the first, per second of decoding.</summary>
    public double DecodeTokensPerSecond => Tokens.Length > 1 && Decode > TimeSpan.Zero ? (Tokens.Length - 1) / Decode.TotalSeconds : 0;
    public double PrefillTokensPerSecond => Prefill > TimeSpan.Zero ? PromptTokens / Prefill.TotalSeconds : 0;
}

/// <summary>
/// Autoregressive generation with a KV cache: the prompt is prefilled in one pass, then one token per
/// step; each new token is handed to a callback as soon as it is chosen (for streaming).
/// </summary>
public sealed class Generator(LlamaModel model)
{
    public LlamaModel Model { get; } = model ?? throw new ArgumentNullException(nameof(model));

    public GenerationResult Generate(ReadOnlySpan<int> prompt, GenerationOptions? options = null, Action<int>? onToken = null,
        CancellationToken cancellation = default)
    {
        options ??= new GenerationOptions();
        if (prompt.IsEmpty) throw new ArgumentException("Generate: the prompt is empty (start from BOS at least)", nameof(prompt));
        if (options.MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(options), $"MaxNewTokens must be >= 0, got {options.MaxNewTokens}");
        var sampler = new Sampler(options.Temperature, options.TopP, options.Seed);
        var stops = options.StopTokens ?? [Model.Config.EosId];
        int capacity = Math.Min(Model.Config.MaxSeqLen, prompt.Length + options.MaxNewTokens);
        if (prompt.Length > Model.Config.MaxSeqLen)
            throw new ArgumentException($"Generate: prompt of {prompt.Length} tokens exceeds the model's context of {Model.Config.MaxSeqLen}", nameof(prompt));
        if (options.MaxNewTokens == 0) return new GenerationResult([], StopReason.TokenLimit, prompt.Length, TimeSpan.Zero, TimeSpan.Zero);
        using var cache = Model.NewCache(Math.Max(capacity, 1));
        using var buffers = Model.NewInferenceBuffers();

        var generated = new List<int>();
        var clock = Stopwatch.StartNew();
        int next = Step(prompt, cache, buffers, sampler);
        var prefill = clock.Elapsed;
        clock.Restart();
        var reason = StopReason.TokenLimit;
        int[] one = new int[1];
        while (generated.Count < options.MaxNewTokens)
        {
            if (stops.Contains(next)) { reason = StopReason.StopToken; break; }
            generated.Add(next);
            onToken?.Invoke(next);
            if (generated.Count == options.MaxNewTokens) break;
            if (cancellation.IsCancellationRequested) { reason = StopReason.Cancelled; break; }
            if (cache.Length >= cache.Capacity) { reason = StopReason.ContextFull; break; }
            one[0] = next;
            next = Step(one, cache, buffers, sampler);
        }
        return new GenerationResult([.. generated], reason, prompt.Length, prefill, clock.Elapsed);
    }

    /// <summary>Runs the tokens through the model (appending to the cache) and samples the next one.</summary>
    private int Step(ReadOnlySpan<int> tokens, KvCache cache, InferenceBuffers buffers, Sampler sampler)
    {
        var logits = Model.Infer(tokens, cache, buffers);
        return sampler.Sample(logits.Accelerator.Kind == UioLlm.Kernels.AcceleratorKind.Cpu ? logits.Span : logits.ToArray());
    }
}
