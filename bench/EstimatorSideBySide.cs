using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;
using static UioLlm.Bench.TrainingBenchSupport;

namespace UioLlm.Bench;

/// <summary>
/// The paper's Table 4 in miniature: how far each gradient estimator's encoder gradient is from the exact
/// one (full BPTT) on a small model. For the unbiased incremental estimator, with and without the
/// compensation factor, many reservoir seeds per document give the mean and variance of
/// ||estimate|| / ||exact|| and of cos(estimate, exact), plus the same two numbers for the mean estimate
/// over the seeds (which tends to the exact gradient when the estimator is unbiased). Truncated and
/// incremental TBPTT are deterministic: one estimate per document. Only the encoder part of the gradient
/// is compared (encoder LoRA and the memory embedding): the transfer head's gradient is exact for every
/// estimator.
/// </summary>
internal static class EstimatorSideBySide
{
    private const int SegmentLength = 16, MemoryTokens = 2;
    private static readonly int[] Windows = [1, 2, 4, 8];

    /// <summary>Table 4 of the paper (l=128, 8x, 8 x 2048-token inputs): norm ratio without / with the factor.</summary>
    private static readonly Dictionary<int, (double Without, double With)> Paper = new()
    {
        [1] = (0.676, 0.994), [4] = (0.818, 0.980), [8] = (0.935, 1.024),
    };

    public static void Run(TextWriter output, bool quick, IReadOnlyList<int>? segmentCounts)
    {
        segmentCounts ??= [8, 16];
        int seeds = quick ? 16 : 64;
        int documents = quick ? 4 : 8;
        using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, 1);
        var (weights, modelName) = SmallModel(accelerator);
        using var _ = weights;
        var config = new UioConfig
        {
            SegmentLength = SegmentLength, MemoryTokens = MemoryTokens, EncoderRank = 8, EncoderAlpha = 16, TransferRank = 8, TransferAlpha = 16,
        };
        using var uio = new UioModel(new LlamaModel(weights), config, seed: 1);
        RandomiseAdapters(uio, seed: 2, std: 0.2);
        var encoder = uio.EncoderParameters().ToList();
        var (corpus, corpusName) = Corpus(weights.Config.VocabSize, documents * (segmentCounts.Max() * SegmentLength + 1), seed: 3);

        output.WriteLine($"{accelerator.Description}; model: {modelName}; UIO l={SegmentLength} n={MemoryTokens} (8x), encoder/transfer LoRA r=8 alpha=16, B ~ N(0, 0.2^2)");
        output.WriteLine($"documents: {documents} x T segments from {corpusName}; {seeds} reservoir seeds per document; encoder gradient only " +
            $"({encoder.Sum(p => p.Value.Length)} values); exact = full BPTT");
        foreach (int segments in segmentCounts)
            Table(output, uio, encoder, Documents(corpus, documents, segments * SegmentLength + 1), segments, seeds);
    }

    /// <summary>Consecutive non-overlapping documents of the given length (after skipping the first 1000 tokens of front matter where there is room).</summary>
    private static int[][] Documents(int[] corpus, int count, int length)
    {
        int skip = Math.Min(1000, Math.Max(0, corpus.Length - count * length));
        return Enumerable.Range(0, count).Select(d => corpus.AsSpan(skip + d * length, length).ToArray()).ToArray();
    }

    private static void Table(TextWriter output, UioModel uio, List<Var> encoder, int[][] documents, int segments, int seeds)
    {
        output.WriteLine();
        output.WriteLine($"T = {segments} segments ({segments * SegmentLength + 1}-token documents)");
        output.WriteLine($"{"estimator",-26} {"S",2} {"ratio mean",10} {"ratio var",10} {"cos mean",9} {"cos var",9} {"|mean|/|ex|",11} {"cos(mean)",9} {"paper",6}");
        var exact = documents.Select(d => Gradient(uio, new FullBptt(), d, encoder)).ToArray();
        foreach (int window in Windows)
        {
            Row(output, "truncated BPTT", window, exact, documents.Select(d => new[] { Gradient(uio, new TruncatedBptt(window), d, encoder) }).ToArray(), null);
            Row(output, "incremental TBPTT", window, exact, documents.Select(d => new[] { Gradient(uio, new IncrementalTbptt(window), d, encoder) }).ToArray(), null);
            foreach (bool compensate in new[] { false, true })
            {
                var samples = documents.Select(d => Enumerable.Range(0, seeds)
                    .Select(seed => Gradient(uio, new UnbiasedIncremental(window, seed, compensate), d, encoder)).ToArray()).ToArray();
                double? paper = Paper.TryGetValue(window, out var p) ? (compensate ? p.With : p.Without) : null;
                Row(output, compensate ? "UIO, compensated" : "UIO, no compensation", window, exact, samples, paper);
            }
        }
    }

    /// <summary>One estimator's row: statistics over every (document, seed) estimate, and of each document's mean estimate.</summary>
    private static void Row(TextWriter output, string name, int window, double[][] exact, double[][][] samples, double? paper)
    {
        var ratios = new List<double>();
        var cosines = new List<double>();
        var meanRatios = new List<double>();
        var meanCosines = new List<double>();
        for (int d = 0; d < exact.Length; d++)
        {
            double exactNorm = Norm(exact[d]);
            foreach (var estimate in samples[d])
            {
                ratios.Add(Norm(estimate) / exactNorm);
                cosines.Add(Cosine(estimate, exact[d]));
            }
            var mean = new double[exact[d].Length];
            foreach (var estimate in samples[d])
                for (int i = 0; i < mean.Length; i++) mean[i] += estimate[i] / samples[d].Length;
            meanRatios.Add(Norm(mean) / exactNorm);
            meanCosines.Add(Cosine(mean, exact[d]));
        }
        var (ratio, ratioVariance) = MeanVariance(ratios);
        var (cosine, cosineVariance) = MeanVariance(cosines);
        output.WriteLine($"{name,-26} {window,2} {ratio,10:F3} {ratioVariance,10:F4} {cosine,9:F3} {cosineVariance,9:F4} {meanRatios.Average(),11:F3} {meanCosines.Average(),9:F3} {(paper is { } p ? p.ToString("F3") : ""),6}");
    }
}
