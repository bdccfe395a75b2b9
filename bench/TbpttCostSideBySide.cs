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
    private static LlamaConfig Shape => InferenceSideBySide.Stories15MShape with { VocabSize = 512, MaxSeqLen = 4096 };

    public static void Run(TextWriter output, bool quick, int threads)
    {
        int segments = quick ? 8 : 16;
        int repeats = quick ? 1 : 3;
        using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads);
        using var weights = InferenceSideBySide.RandomWeights(accelerator, Shape, seed: 1);
        var config = new UioConfig { SegmentLength = 64, MemoryTokens = 8, EncoderRank = 16, EncoderAlpha = 32, TransferRank = 16, TransferAlpha = 32 };
        using var uio = new UioModel(new LlamaModel(weights), config, seed: 1);
        RandomiseAdapters(uio, seed: 2, std: 0.02);
        var rng = new Random(3);
        var document = new int[segments * config.SegmentLength + 1];
        for (int i = 0; i < document.Length; i++) document[i] = rng.Next(Shape.VocabSize);

        output.WriteLine($"{accelerator.Description}; base: dim 288, 6 layers, 6 heads, vocab 512 (random weights); UIO l={config.SegmentLength} n={config.MemoryTokens}; " +
            $"one document of T={segments} segments per step; best of {repeats}");
        output.WriteLine($"{"estimator",-22} {"S",2} {"s/step",8} {"enc fwd",8} {"enc bwd",8} {"live graphs",11} {"peak tape MB",12}");
        Measure(output, uio, document, new IncrementalTbptt(1), 0, print: false);   // warm-up
        foreach (int window in new[] { 1, 2, 4, 8 })
        {
            Measure(output, uio, document, new TruncatedBptt(window), repeats);
            Measure(output, uio, document, new IncrementalTbptt(window), repeats);
            Measure(output, uio, document, new UnbiasedIncremental(window, seed: 1), repeats);
        }
        Measure(output, uio, document, new FullBptt(), repeats);
    }

    private static void Measure(TextWriter output, UioModel uio, int[] document, IGradientEstimator estimator, int repeats, bool print = true)
    {
        double best = double.MaxValue;
        for (int r = 0; r <= repeats; r++)
        {
            foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
            estimator.Counters.Reset();
            var clock = Stopwatch.StartNew();
            estimator.Accumulate(uio, document);
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        if (!print) return;
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
        output.WriteLine($"{name,-22} {window,2} {best,8:F3} {c.EncoderForwards,8} {c.EncoderBackwards,8} {c.PeakLiveGraphs,11} {c.PeakTapeBytes / 1e6,12:F1}");
    }
}
