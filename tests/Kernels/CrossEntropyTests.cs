using UioLlm.Kernels;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Kernels.Ops;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class CrossEntropyTests
{
    private const int Ignore = -100;
    private readonly Accelerator acc = TestBackend.Shared;
    private IKernels K => acc.Kernels;

    public static TheoryData<int, int, int> Cases()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int w in new[] { 128, 256, 512 })
            foreach (var (rows, vocab) in new[] { (1, 1), (1, 7), (3, 17), (4, 33), (2, 1001) })
                data.Add(w, rows, vocab);
        data.Add(256, 5, 32000); // parallel rows, real vocabulary size
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void LossLseAndGradientMatchReference(int width, int rows, int vocab)
    {
        using var simd = Width(width);
        var rng = new Rng(rows * 13 + vocab + width);
        float[] logits = rng.Uniform(rows * vocab, -6f, 6f);
        int[] targets = rng.Ints(rows, 0, vocab);
        if (rows > 2) targets[1] = Ignore;
        using var tl = Tensor(acc, logits, "logits", rows, vocab);
        using var lse = acc.Allocate([rows], "lse");
        float loss = K.CrossEntropy(tl, targets, lse, Ignore);
        double expected = CrossEntropyReference.Loss(D(logits), vocab, targets, Ignore, out var expectedLse);
        Assert.Equal(expected, loss, 1e-5 * Math.Max(1, Math.Abs(expected)));
        var lseValues = lse.ToArray();
        for (int r = 0; r < rows; r++)
            if (targets[r] != Ignore) Assert.Equal(expectedLse[r], lseValues[r], 2e-6 * Math.Max(1, Math.Abs(expectedLse[r])));

        using var dl = acc.Allocate([rows, vocab], "dLogits");
        K.CrossEntropyBackward(tl, targets, lse, dl, 0.7f, Ignore);
        Check.RelativeNorm(AnalyticGradient(D(logits), vocab, targets, 0.7), dl.ToArray(), 1e-5, "dLogits");
    }

    [Theory, MemberData(nameof(Widths), MemberType = typeof(Ops))]
    public void GradientMatchesFiniteDifferencesWithIgnoredRows(int width)
    {
        using var simd = Width(width);
        const int rows = 4, vocab = 19;
        var rng = new Rng(77);
        float[] logits = rng.Uniform(rows * vocab, -3f, 3f);
        int[] targets = [3, Ignore, 18, 0];
        var numeric = FiniteDifference.Gradient(v => 1.5 * CrossEntropyReference.Loss(v, vocab, targets, Ignore, out _), D(logits));
        using var tl = Tensor(acc, logits, "logits", rows, vocab);
        using var lse = acc.Allocate([rows], "lse");
        using var dl = acc.Allocate([rows, vocab], "dLogits");
        K.CrossEntropy(tl, targets, lse, Ignore);
        K.CrossEntropyBackward(tl, targets, lse, dl, 1.5f, Ignore);
        Check.RelativeNorm(numeric, dl.ToArray(), 1e-5, "dLogits vs finite differences");
        Assert.All(dl.ToArray().AsSpan(vocab, vocab).ToArray(), v => Assert.Equal(0f, v)); // ignored row untouched

        K.CrossEntropyBackward(tl, targets, lse, dl, 1.5f, Ignore);
        Check.RelativeNorm(numeric.Select(v => 2 * v).ToArray(), dl.ToArray(), 1e-5, "dLogits accumulated twice");
    }

    [Theory]
    [InlineData(1, 7, false)]
    [InlineData(4, 33, true)]
    [InlineData(5, 32000, true)]   // parallel rows, real vocabulary size, in place
    [InlineData(6, 1001, false)]
    public void FusedLossAndGradientMatchTheSeparateOps(int rows, int vocab, bool inPlace)
    {
        var rng = new Rng(rows * 7 + vocab);
        float[] logits = rng.Uniform(rows * vocab, -6f, 6f);
        int[] targets = rng.Ints(rows, 0, vocab);
        if (rows > 2) targets[1] = Ignore;
        using var tl = Tensor(acc, logits, "logits", rows, vocab);
        using var lse = acc.Allocate([rows], "lse");
        using var other = acc.FromArray(rng.Uniform(rows * vocab), [rows, vocab]); // garbage: must be overwritten
        var dl = inPlace ? tl : other;
        float loss = K.CrossEntropyWithGradient(tl, targets, lse, dl, 0.7f, Ignore);
        double expected = CrossEntropyReference.Loss(D(logits), vocab, targets, Ignore, out var expectedLse);
        Assert.Equal(expected, loss, 1e-5 * Math.Max(1, Math.Abs(expected)));
        var lseValues = lse.ToArray();
        for (int r = 0; r < rows; r++)
            if (targets[r] != Ignore) Assert.Equal(expectedLse[r], lseValues[r], 2e-6 * Math.Max(1, Math.Abs(expectedLse[r])));
        Check.RelativeNorm(AnalyticGradient(D(logits), vocab, targets, 0.7), dl.ToArray(), 1e-5, "dLogits (written)");
        if (rows > 2) Assert.All(dl.ToArray().AsSpan(vocab, vocab).ToArray(), v => Assert.Equal(0f, v)); // ignored row zeroed
    }

    [Fact]
    public void FusedGradientMatchesFiniteDifferences()
    {
        const int rows = 3, vocab = 13;
        var rng = new Rng(78);
        float[] logits = rng.Uniform(rows * vocab, -3f, 3f);
        int[] targets = [5, Ignore, 12];
        var numeric = FiniteDifference.Gradient(v => 2.5 * CrossEntropyReference.Loss(v, vocab, targets, Ignore, out _), D(logits));
        using var tl = Tensor(acc, logits, "logits", rows, vocab);
        using var lse = acc.Allocate([rows], "lse");
        K.CrossEntropyWithGradient(tl, targets, lse, tl, 2.5f, Ignore);
        Check.RelativeNorm(numeric, tl.ToArray(), 1e-5, "in-place dLogits vs finite differences");
    }

    [Fact]
    public void FusedOpRefusesPartialOverlapAndAllIgnoredGivesZero()
    {
        using var logits = acc.Allocate([2, 4], "logits");
        using var lse = acc.Allocate([2], "lse");
        using var shifted = acc.Allocate([3, 4], "storage");
        var overlap = shifted.Slice(1, 2);
        using var partner = acc.Allocate([2, 4], "partner");
        var view = partner.Slice(0, 2);
        Assert.Contains("dLogits", Assert.Throws<ArgumentException>(() => K.CrossEntropyWithGradient(shifted.Slice(0, 2), [0, 1], lse, overlap)).Message);
        K.Fill(logits, 3f);
        Assert.Equal(0f, K.CrossEntropyWithGradient(logits, [Ignore, Ignore], lse, view));
        Assert.All(partner.ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void LargeLogitsAreStableAndAllIgnoredGivesZero()
    {
        float[] logits = [1000f, -1000f, 999f, 0f, -80f, 85f, 85f, -87f];
        int[] targets = [2, 1];
        using var tl = Tensor(acc, logits, "logits", 2, 4);
        using var lse = acc.Allocate([2], "lse");
        float loss = K.CrossEntropy(tl, targets, lse);
        double expected = CrossEntropyReference.Loss(D(logits), 4, targets, Ignore, out _);
        Assert.Equal(expected, loss, 1e-4);
        Assert.Equal(0f, K.CrossEntropy(tl, [Ignore, Ignore], lse));
        using var dl = acc.Allocate([2, 4], "dLogits");
        K.CrossEntropyBackward(tl, [Ignore, Ignore], lse, dl);
        Assert.All(dl.ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void BadTargetsAndShapesThrow()
    {
        using var logits = acc.Allocate([3, 5], "logits");
        using var lse = acc.Allocate([3], "lse");
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => K.CrossEntropy(logits, [0, 5, 1], lse));
        Assert.Contains("targets[1] = 5", e.Message);
        Assert.Contains("ignore index -100", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => K.CrossEntropy(logits, [0, -1, 1], lse));
        Assert.Contains("targets has 2 entries", Assert.Throws<ArgumentException>(() => K.CrossEntropy(logits, [0, 1], lse)).Message);
        using var lse2 = acc.Allocate([2], "lse");
        Assert.Contains("lse has shape [2]", Assert.Throws<ArgumentException>(() => K.CrossEntropy(logits, [0, 1, 2], lse2)).Message);
        using var dBad = acc.Allocate([3, 4], "dLogits");
        Assert.Contains("dLogits", Assert.Throws<ArgumentException>(() => K.CrossEntropyBackward(logits, [0, 1, 2], lse, dBad)).Message);
    }

    /// <summary>dLoss * (softmax - onehot) / valid on valid rows, in double.</summary>
    private static double[] AnalyticGradient(double[] logits, int vocab, int[] targets, double dLoss)
    {
        int rows = targets.Length, valid = targets.Count(t => t != Ignore);
        var g = new double[logits.Length];
        CrossEntropyReference.Loss(logits, vocab, targets, Ignore, out var lse);
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == Ignore) continue;
            for (int j = 0; j < vocab; j++)
                g[r * vocab + j] = dLoss * (Math.Exp(logits[r * vocab + j] - lse[r]) - (j == targets[r] ? 1 : 0)) / valid;
        }
        return g;
    }
}
