using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;

namespace UioLlm.Bench;

/// <summary>
/// What UIO costs against full attention on the same base (stories15M shape, random weights): time to
/// process a context (log-probabilities of every token) of 1K..64K tokens, time per token, and the keys and
/// values held at the end. UIO: l = 256, n = 32 (8x). Full attention keeps every token's K/V and its time
/// grows quadratically; it runs up to --full-max tokens.
/// </summary>
internal static class UioCostSideBySide
{
    public static void Run(TextWriter output, IReadOnlyList<int> contexts, int fullMax, int threads)
    {
        using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads);
        var shape = LlamaConfig.Stories15MShape with { MaxSeqLen = 1 << 20 };
        using var weights = LlamaWeights.Random(accelerator, shape, seed: 1);
        var model = new LlamaModel(weights);
        var config = new UioConfig { SegmentLength = 256, MemoryTokens = 32, EncoderRank = 16, EncoderAlpha = 32, TransferRank = 16, TransferAlpha = 32 };
        using var uio = new UioModel(model, config, seed: 1);
        var rng = new Random(3);
        output.WriteLine($"{accelerator.Description}; base: stories15M shape (random weights); UIO l={config.SegmentLength} n={config.MemoryTokens}");
        output.WriteLine($"{"context",8} {"method",-15} {"seconds",9} {"us/token",9} {"KV MB",9} {"KV ratio",9}");
        // Warm-up: compile every path once before timing.
        using (var warm = new UioSession(uio)) warm.Feed(new int[2 * config.SegmentLength + 5]);
        FullAttention(model, new int[300]);
        double? uioFirstPerToken = null;
        foreach (int context in contexts)
        {
            var text = new int[context];
            for (int i = 0; i < text.Length; i++) text[i] = rng.Next(shape.VocabSize);

            var clock = Stopwatch.StartNew();
            long uioBytes;
            using (var session = new UioSession(uio))
            {
                session.Feed(text);
                uioBytes = session.KvBytes;
            }
            double uioSeconds = clock.Elapsed.TotalSeconds;
            double perToken = uioSeconds / context * 1e6;
            uioFirstPerToken ??= perToken;
            long fullBytes = 2L * shape.Layers * context * shape.KvDim * sizeof(float);
            output.WriteLine($"{context,8} {"UIO 8x",-15} {uioSeconds,9:F2} {perToken,9:F1} {uioBytes / 1e6,9:F1} {(double)uioBytes / fullBytes,9:F3}" +
                $"   (per token {perToken / uioFirstPerToken:F2}x the {contexts[0]}-token run)");

            if (context > fullMax)
            {
                output.WriteLine($"{context,8} {"full attention",-15} {"not run",9} {"",9} {fullBytes / 1e6,9:F1} {1.0,9:F3}   (above --full-max {fullMax})");
                continue;
            }
            clock.Restart();
            FullAttention(model, text);
            double fullSeconds = clock.Elapsed.TotalSeconds;
            output.WriteLine($"{context,8} {"full attention",-15} {fullSeconds,9:F2} {fullSeconds / context * 1e6,9:F1} {fullBytes / 1e6,9:F1} {1.0,9:F3}");
        }
    }

    /// <summary>The base model over the whole context with one growing KV cache, logits for every token, 256 tokens per pass.</summary>
    private static void FullAttention(LlamaModel model, int[] text)
    {
        using var cache = model.NewCache(text.Length);
        for (int at = 0; at < text.Length; at += 256)
        {
            using var tape = new Tape(model.Accelerator);
            using var _ = tape.NoGrad();
            model.Forward(tape, text.AsSpan(at, Math.Min(256, text.Length - at)), cache);
        }
    }
}
