using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;

namespace UioLlm.Training;

/// <summary>
/// The end-to-end UIO training step that `uio bench training` and the GPU runner time: the stories15M shape with
/// random weights, l tokens per segment, n = l/8 memory tokens, LoRA r = 16, UnbiasedIncremental(S = 2) over one
/// random-token document of <paramref name="segments"/> segments.
/// </summary>
public static class StepBenchmark
{
    /// <summary>Best seconds per step over <paramref name="repeats"/> timed steps (after one warm-up step).</summary>
    public static double BestSeconds(Accelerator accelerator, int segmentLength, int segments = 4, int repeats = 2)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        var shape = LlamaConfig.Stories15MShape with { MaxSeqLen = 4096 };
        using var weights = LlamaWeights.Random(accelerator, shape, seed: 1);
        using var uio = new UioModel(new LlamaModel(weights),
            new UioConfig
            {
                SegmentLength = segmentLength, MemoryTokens = segmentLength / 8,
                EncoderRank = 16, EncoderAlpha = 32, TransferRank = 16, TransferAlpha = 32,
            }, seed: 1);
        var rng = new Random(2);
        var document = Enumerable.Range(0, segments * segmentLength + 1).Select(_ => rng.Next(shape.VocabSize)).ToArray();
        double best = double.MaxValue;
        for (int r = 0; r <= repeats; r++)
        {
            foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
            accelerator.Synchronize();
            var clock = Stopwatch.StartNew();
            new UnbiasedIncremental(2, seed: r).Accumulate(uio, document);
            accelerator.Synchronize();
            if (r > 0) best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }
}
