using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;
using static UioLlm.Bench.TrainingBenchSupport;

namespace UioLlm.Bench;

/// <summary>
/// The paper's Fig. 7 in miniature: wall time and memory of one training step (one document of T
/// segments, gradient accumulation only) against the window / reservoir size S. Naive truncated BPTT
/// backpropagates every decoder loss through the S most recent encoder graphs, so its encoder backwards
/// (and time) grow with S; incremental TBPTT and the unbiased incremental estimator backpropagate each
/// graph once, so they stay flat. Memory is the most bytes held at once by live encoder tapes.
/// </summary>
internal static class TbpttCostSideBySide
{
    /// <summary>The stories15M block shape (dim 288, 6 layers, 6 heads) with a 512-token vocabulary, so one step takes about a second.</summary>
    private static LlamaConfig Shape => LlamaConfig.Stories15MShape with { VocabSize = 512, MaxSeqLen = 4096 };

    public static void Run(TextWriter output, bool quick, int threads)
    {
        int segments = quick ? 8 : 16;
        int repeats = quick ? 1 : 4;
        using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads);
        using var weights = LlamaWeights.Random(accelerator, Shape, seed: 1);
        var config = new UioConfig { SegmentLength = 64, MemoryTokens = 8, EncoderRank = 16, EncoderAlpha = 32, TransferRank = 16, TransferAlpha = 32 };
        using var uio = new UioModel(new LlamaModel(weights), config, seed: 1);
        RandomiseAdapters(uio, seed: 2, std: 0.02);
        var rng = new Random(3);
        var document = new int[segments * config.SegmentLength + 1];
        for (int i = 0; i < document.Length; i++) document[i] = rng.Next(Shape.VocabSize);

        output.WriteLine($"{accelerator.Description}; base: dim 288, 6 layers, 6 heads, vocab 512 (random weights); UIO l={config.SegmentLength} n={config.MemoryTokens}; " +
            $"one document of T={segments} segments per step; best of {repeats}, round-robin");
        output.WriteLine("peak tape MB: most bytes held at once by live encoder tapes; GFLOP run: matrix FLOPs of the step as run (UioStepFlops); UIO's counters are from its last run");
        output.WriteLine($"{"estimator",-22} {"S",2} {"s/step",8} {"enc fwd",8} {"enc bwd",8} {"live graphs",11} {"peak tape MB",12} {"GFLOP run",9}");
        var flops = new UioStepFlops(Shape, config);
        var estimators = new List<IGradientEstimator>();
        foreach (int window in new[] { 1, 2, 4, 8 })
            estimators.AddRange([new TruncatedBptt(window), new IncrementalTbptt(window), new UnbiasedIncremental(window, seed: 1)]);
        estimators.Add(new FullBptt());
        // Round-robin repeats (round 0 warms up), best per estimator: slow drift of this shared VM hits all alike.
        var best = estimators.Select(_ => double.MaxValue).ToArray();
        for (int r = 0; r <= repeats; r++)
            for (int i = 0; i < estimators.Count; i++)
            {
                double seconds = Time(uio, document, estimators[i]);
                if (r > 0) best[i] = Math.Min(best[i], seconds);
            }
        for (int i = 0; i < estimators.Count; i++) Print(output, estimators[i], best[i], flops, segments);
    }

    private static double Time(UioModel uio, int[] document, IGradientEstimator estimator)
    {
        foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
        estimator.Counters.Reset();
        var clock = Stopwatch.StartNew();
        estimator.Accumulate(uio, document);
        return clock.Elapsed.TotalSeconds;
    }

    private static void Print(TextWriter output, IGradientEstimator estimator, double best, UioStepFlops flops, int segments)
    {
        var c = estimator.Counters;
        string name = estimator switch
        {
            TruncatedBptt => "truncated BPTT (naive)",
            IncrementalTbptt => "incremental TBPTT",
            UnbiasedIncremental => "UIO (reservoir)",
            _ => "full BPTT",
        };
        string window = estimator switch
        {
            TruncatedBptt t => t.Window.ToString(),
            IncrementalTbptt i => i.Window.ToString(),
            UnbiasedIncremental u => u.ReservoirSize.ToString(),
            _ => "T",
        };
        output.WriteLine($"{name,-22} {window,2} {best,8:F3} {c.EncoderForwards,8} {c.EncoderBackwards,8} {c.PeakLiveGraphs,11} {c.PeakTapeBytes / 1e6,12:F1} {flops.Step(segments, c.EncoderForwards, c.EncoderBackwards) / 1e9,9:F1}");
    }
}
