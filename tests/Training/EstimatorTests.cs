using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Tests.Uio;
using UioLlm.Training.Estimators;

namespace UioLlm.Tests.Training;

public sealed class EstimatorTests
{
    private const int L = 4, N = 2;

    /// <summary>A tiny UIO model (l = 4, n = 2) with every adapter non-zero, and a document of T segments.</summary>
    private static (UioModel Uio, int[] Document) Setup(int seed, int segments)
    {
        var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 512 }, seed);
        var uio = new UioModel(new LlamaModel(weights), UioModelTests.Small(l: L, n: N), seed);
        UioModelTests.Randomise(uio, seed + 1, std: 0.3f);
        uio.MemoryEmbedding.Value.CopyFrom(new Rng(seed + 2).Normal(weights.Config.Dim, 1f));
        return (uio, new Rng(seed + 3).Ints(segments * L + 1, 0, 37));
    }

    /// <summary>The estimator's gradient of every trainable parameter, flattened (encoder part first).</summary>
    private static double[] Gradient(UioModel uio, IGradientEstimator estimator, int[] document, bool encoderOnly = false)
    {
        var parameters = (encoderOnly ? uio.EncoderParameters() : uio.TrainableParameters()).ToList();
        foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
        estimator.Accumulate(uio, document);
        return parameters.SelectMany(p => p.Grad!.ToArray().Select(v => (double)v)).ToArray();
    }

    private static double Norm(double[] v) => Math.Sqrt(v.Sum(x => x * x));

    private static double RelativeError(double[] expected, double[] actual) =>
        Norm(expected.Zip(actual, (e, a) => e - a).ToArray()) / Norm(expected);

    [Fact]
    public void ExplicitTargetsScoreOnlyTheUnmaskedPositions()
    {
        var (uio, document) = Setup(57, segments: 3);
        var parameters = uio.TrainableParameters().ToList();
        double[] Run(int[]? targets, out EstimateResult result)
        {
            foreach (var p in parameters) p.ZeroGrad();
            result = targets is null ? new FullBptt().Accumulate(uio, document) : new FullBptt().Accumulate(uio, document, targets);
            return parameters.SelectMany(p => p.Grad!.ToArray().Select(v => (double)v)).ToArray();
        }
        // targets = document[1..] is the plain call.
        var plain = Run(null, out var all);
        Assert.Equal(new EstimateResult(all.Loss, 3, 3 * L, 3), all);
        Assert.True(RelativeError(plain, Run(document[1..], out _)) < 1e-6);

        // Only the last segment's last two targets scored: the loss is their mean cross-entropy alone.
        var masked = document[1..];
        Array.Fill(masked, SegmentLoop.IgnoreTarget, 0, masked.Length - 2);
        var gradient = Run(masked, out var result);
        Assert.Equal(3, result.Segments);
        Assert.Equal(2, result.Tokens);
        Assert.Equal(1, result.ScoredSegments);
        Assert.True(Norm(gradient) > 0);
        Assert.True(RelativeError(plain, gradient) > 0.1, "masking changes the gradient");
        double expected;
        using (var tape = new Tape(uio.Accelerator))
        {
            using var _ = tape.NoGrad();
            var memories = new List<Memory> { uio.Compress(tape, document.AsSpan(0, 2 * L)) };
            var logits = uio.Decode(tape, document.AsSpan(2 * L, L), memories).Value.ToArray();
            int vocab = logits.Length / L;
            expected = -(UioSession.LogSoftmaxAt(logits.AsSpan(2 * vocab, vocab), document[3 * L - 1])
                         + UioSession.LogSoftmaxAt(logits.AsSpan(3 * vocab, vocab), document[3 * L])) / 2;
        }
        Assert.Equal(expected, result.Loss, 1e-4);
        Assert.Throws<ArgumentException>(() => new FullBptt().Accumulate(uio, document, document));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void IncrementalTbpttEqualsNaiveTruncatedBptt(int window)
    {
        var (uio, document) = Setup(50, segments: 6);
        var naive = Gradient(uio, new TruncatedBptt(window), document);
        var incremental = Gradient(uio, new IncrementalTbptt(window), document);
        Assert.True(Norm(naive) > 0);
        double err = RelativeError(naive, incremental);
        Assert.True(err < 1e-4, $"S={window}: relative error {err:E2}");
        // With a window covering every segment, truncation is exact.
        if (window >= 4)
        {
            var (_, longDoc) = (uio, document);
            Assert.True(RelativeError(Gradient(uio, new FullBptt(), longDoc), Gradient(uio, new IncrementalTbptt(6), longDoc)) < 1e-4);
        }
    }

    [Fact]
    public void FullBpttEqualsFiniteDifferencesOfTheTotalLoss()
    {
        var (uio, document) = Setup(51, segments: 4);
        var parameters = uio.TrainableParameters().ToList();
        foreach (var p in parameters) p.ZeroGrad();
        var result = new FullBptt().Accumulate(uio, document);
        Assert.Equal(4, result.Segments);

        double TotalLoss()
        {
            // sum_t J_t with every memory computed (not detached): the function FullBptt differentiates.
            using var tape = new Tape(uio.Accelerator);
            using var _ = tape.NoGrad();
            var memories = new List<Memory>();
            double total = 0;
            for (int t = 0; t < 4; t++)
            {
                var tokens = document.AsSpan(t * L, L);
                total += uio.DecoderLoss(tape, tokens, document.AsSpan(t * L + 1, L), memories).Value.ToArray()[0];
                memories.Add(uio.Compress(tape, tokens));
            }
            return total;
        }
        Assert.Equal(TotalLoss(), result.Loss, 4);
        GradCheck.PerTensor(TotalLoss, parameters, new Rng(52), 1e-2, 3e-2, "full BPTT");
    }

    [Fact]
    public void CountersShowTheCostOfEachEstimator()
    {
        const int T = 8, S = 2;
        var (uio, document) = Setup(53, segments: T);
        var incremental = new IncrementalTbptt(S);
        incremental.Accumulate(uio, document);
        var unbiased = new UnbiasedIncremental(S, seed: 1);
        unbiased.Accumulate(uio, document);
        var naive = new TruncatedBptt(S);
        naive.Accumulate(uio, document);
        var full = new FullBptt();
        full.Accumulate(uio, document);
        foreach (var e in new IGradientEstimator[] { incremental, unbiased })
        {
            Assert.Equal(T - 1, e.Counters.EncoderForwards); // the last segment's memory is read by nothing: not encoded
            Assert.InRange(e.Counters.EncoderBackwards, 1, T);
            Assert.InRange(e.Counters.PeakLiveGraphs, 1, S + 1);
            Assert.Equal(T, e.Counters.DecoderForwards);
        }
        // Naive truncation: every step but the first backpropagates through up to S graphs.
        Assert.Equal(T - 1, naive.Counters.EncoderForwards);
        Assert.Equal((T - 1) * S - S * (S - 1) / 2, naive.Counters.EncoderBackwards);
        Assert.InRange(naive.Counters.PeakLiveGraphs, 1, S + 1);
        Assert.Equal(T - 1, full.Counters.PeakLiveGraphs);
        Assert.True(full.Counters.PeakTapeBytes > incremental.Counters.PeakTapeBytes);
    }

    [Fact]
    public void UnbiasedIncrementalConvergesToTheExactGradientWhileTheUncompensatedOneStaysBiased()
    {
        const int T = 8, S = 1;
        var (uio, document) = Setup(54, segments: T);
        var exact = Gradient(uio, new FullBptt(), document, encoderOnly: true);
        double exactNorm = Norm(exact);

        double[][] Samples(int count, bool compensate) =>
            Enumerable.Range(0, count).Select(seed => Gradient(uio, new UnbiasedIncremental(S, seed, compensate), document, encoderOnly: true)).ToArray();
        var compensated = Samples(256, compensate: true);
        var plain = Samples(256, compensate: false);

        // Per-coordinate variance of one estimate, from all 256 samples.
        int dim = exact.Length;
        var mean256 = Mean(compensated, 256);
        double variance = 0;
        for (int i = 0; i < dim; i++)
            variance += compensated.Sum(s => (s[i] - mean256[i]) * (s[i] - mean256[i])) / (compensated.Length - 1);

        var errors = new List<double>();
        foreach (int count in new[] { 16, 64, 256 })
        {
            var mean = Mean(compensated, count);
            double err = Norm(mean.Zip(exact, (a, b) => a - b).ToArray());
            // Unbiased: E|mean - exact|^2 = variance / N; allow four standard deviations of that spread.
            double bound = 4 * Math.Sqrt(variance / count);
            Assert.True(err <= bound, $"N={count}: |mean - exact| = {err:G4} exceeds {bound:G4}");
            errors.Add(err / exactNorm);
        }
        Assert.True(errors[2] < errors[0], $"the relative error should fall with N: {string.Join(", ", errors.Select(e => e.ToString("G3")))}");

        // Without the factor the far memories are under-weighted: the mean gradient is systematically short.
        double ratio = Norm(Mean(plain, 256)) / exactNorm;
        Assert.True(ratio < 0.9, $"uncompensated norm ratio {ratio:F3} should stay clearly below 1");
        double compensatedRatio = Norm(mean256) / exactNorm;
        Assert.InRange(compensatedRatio, 0.9, 1.1);
    }

    private static double[] Mean(double[][] samples, int count)
    {
        var mean = new double[samples[0].Length];
        for (int s = 0; s < count; s++)
            for (int i = 0; i < mean.Length; i++) mean[i] += samples[s][i] / count;
        return mean;
    }

    [Fact]
    public void BadArgumentsThrow()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TruncatedBptt(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new IncrementalTbptt(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new UnbiasedIncremental(0, 1));
        var (uio, _) = Setup(55, segments: 1);
        Assert.Throws<ArgumentException>(() => new FullBptt().Accumulate(uio, new int[L]));
    }

    /// <summary>
    /// Answer-only documents: a segment with nothing scored has J_t = 0, so its decoder pass is skipped. Every
    /// estimator must still give the exact gradient (S covering the document), computed here on one tape: all
    /// earlier segments compressed, the last segment decoded over their memory.
    /// </summary>
    [Fact]
    public void UnscoredSegmentsSkipTheirDecoderPassWithTheSameGradient()
    {
        const int T = 5;
        var (uio, document) = Setup(61, segments: T);
        var targets = document[1..].ToArray();
        Array.Fill(targets, SegmentLoop.IgnoreTarget, 0, targets.Length - 2);   // only the last two targets (the last segment)
        double[] Grad(IGradientEstimator e)
        {
            foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
            e.Accumulate(uio, document, targets);
            return uio.TrainableParameters().SelectMany(p => p.Grad!.ToArray().Select(v => (double)v)).ToArray();
        }
        double[] exact;
        foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
        using (var tape = new Tape(uio.Accelerator))
        {
            int l = uio.Config.SegmentLength;
            var memory = uio.Compress(tape, document.AsSpan(0, (T - 1) * l));
            tape.Backward(uio.DecoderLoss(tape, document.AsSpan((T - 1) * l, l), targets.AsSpan((T - 1) * l, l), [memory]));
            exact = uio.TrainableParameters().SelectMany(p => p.Grad!.ToArray().Select(v => (double)v)).ToArray();
        }
        var full = new FullBptt();
        var g0 = Grad(full);
        for (int i = 0; i < g0.Length; i++) Assert.True(Math.Abs(g0[i] - exact[i]) <= 1e-5 + 1e-4 * Math.Abs(exact[i]), $"full BPTT gradient {i}: {g0[i]} vs {exact[i]}");
        Assert.Equal(1, full.Counters.DecoderForwards);
        Assert.Contains(exact, g => g != 0);
        // With a window covering the whole document, truncated and incremental BPTT are exact too.
        foreach (var e in new IGradientEstimator[] { new TruncatedBptt(T), new IncrementalTbptt(T), new UnbiasedIncremental(T, seed: 3) })
        {
            var g = Grad(e);
            Assert.Equal(1, ((SegmentLoop)e).Counters.DecoderForwards);
            for (int i = 0; i < g.Length; i++) Assert.True(Math.Abs(g[i] - exact[i]) <= 1e-5 + 1e-4 * Math.Abs(exact[i]), $"{e.GetType().Name} gradient {i}: {g[i]} vs {exact[i]}");
        }
        // The loss of the scored segment alone: the same as scoring it through every decoder pass.
        var result = new FullBptt().Accumulate(uio, document, targets);
        Assert.Equal(1, result.ScoredSegments);
    }
}
