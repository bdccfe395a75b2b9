using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Uio;

/// <summary>
/// MEMORY.md diagnostic 1, raw-token equivalence: with every LoRA B = 0, the decoder given, as the memory of the
/// previous segment, the encoder's per-layer attention inputs at that segment's ordinary positions
/// (<see cref="UioModel.RawTokenMemory"/>, n = l, positions 0 .. l-1) must compute the base model's full attention
/// over [previous ; current], through the tape path (<see cref="UioModel.Decode"/>) and the streaming path
/// (<see cref="UioSession.AppendMemory"/>). Each case also shows that the check has teeth: the same comparison
/// against a reference with the current segment one position later (the off-by-one a broken position count
/// would make) fails the tolerance by a wide margin.
/// </summary>
public sealed class RawTokenEquivalenceTests
{
    /// <summary>max |a - b| / max |b| over the logits: float32 noise is ~1e-6.</summary>
    private const double Tolerance = 1e-4;

    [DataFact]
    public void RawTokenMemoryReproducesFullAttentionOnStories260K()
    {
        using var weights = GoldenGenerationTests.LoadStories260K();
        var ids = GoldenGenerationTests.ExpectedIds();
        Check(weights, ids[..48], segment: 24, memoryTokens: 4);
    }

    [Theory]
    [InlineData(2, 9)]   // GQA: two query heads per key/value head
    [InlineData(1, 10)]  // MQA: one key/value head
    [InlineData(4, 11)]  // plain multi-head
    public void RawTokenMemoryReproducesFullAttentionOnRandomModels(int kvHeads, int seed)
    {
        var config = GradCheck.TinyConfig() with { Dim = 32, Heads = 4, KvHeads = kvHeads, Layers = 3, HiddenDim = 48, VocabSize = 50 };
        using var weights = GradCheck.RandomWeights(config, seed);
        var rng = new Rng(seed);
        var ids = Enumerable.Range(0, 20).Select(_ => rng.Next(0, config.VocabSize)).ToArray();
        Check(weights, ids, segment: 10, memoryTokens: 2);
    }

    private static void Check(LlamaWeights weights, int[] ids, int segment, int memoryTokens)
    {
        var acc = weights.Accelerator;
        var model = new LlamaModel(weights);
        using var uio = new UioModel(model, new UioConfig
        {
            SegmentLength = segment, MemoryTokens = memoryTokens, EncoderRank = 2, EncoderAlpha = 4, TransferRank = 2, TransferAlpha = 4,
        });
        var previous = ids[..segment];
        var current = ids[segment..(2 * segment)];
        int vocab = weights.Config.VocabSize;

        // The base model's full attention over [previous ; current]: the rows of the current segment.
        float[] Full(int shift)
        {
            using var tape = new Tape(acc);
            using var _ = tape.NoGrad();
            var positions = Enumerable.Range(0, 2 * segment).Select(p => p < segment ? p : p + shift).ToArray();
            var logits = model.Forward(tape, ids[..(2 * segment)], positions: positions).Value.ToArray();
            return logits[(segment * vocab)..];
        }
        var expected = Full(shift: 0);
        var offByOne = Full(shift: 1);

        // Tape path: the decoder reads the raw-token memory of the previous segment.
        float[] tapePath;
        using (var tape = new Tape(acc))
        using (tape.NoGrad())
        {
            var memory = uio.RawTokenMemory(tape, previous);
            Assert.Equal(segment, memory.Tokens);
            tapePath = uio.Decode(tape, current, [memory]).Value.ToArray();
        }
        AssertClose(expected, tapePath, "tape path (UioModel.Decode)");

        // Streaming path: the same memory appended to a session, then the current segment fed token by token and at once.
        foreach (int chunk in new[] { 1, segment })
        {
            using var session = new UioSession(uio);
            using (var tape = new Tape(acc))
            using (tape.NoGrad())
                session.AppendMemory(uio.RawTokenMemory(tape, previous));
            Assert.Equal(segment, session.MemoryTokens);
            var streamed = new float[segment * vocab];
            for (int t = 0; t < segment; t += chunk)
            {
                session.Feed(current.AsSpan(t, chunk));
                session.LastLogits.CopyTo(streamed.AsSpan((t + chunk - 1) * vocab));
            }
            // Compare the rows the session exposes (the last logits after each chunk).
            var expectedRows = new float[streamed.Length];
            for (int t = chunk - 1; t < segment; t += chunk) expected.AsSpan(t * vocab, vocab).CopyTo(expectedRows.AsSpan(t * vocab));
            AssertClose(expectedRows, streamed, $"streaming path (UioSession, chunks of {chunk})");
        }

        // The planted bug: a reference whose current segment sits one position later must be far outside the tolerance.
        double planted = RelativeDifference(offByOne, tapePath);
        Assert.True(planted > 100 * Tolerance, $"an off-by-one position changes the logits by only {planted:E2}; the check would not catch it");
    }

    private static double RelativeDifference(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = expected.Max(v => Math.Abs((double)v)), worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - (double)actual[i]));
        return worst / scale;
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        double difference = RelativeDifference(expected, actual);
        Assert.True(difference <= Tolerance, $"{what}: max relative logit difference {difference:E2} > {Tolerance:E0}");
    }

    /// <summary>
    /// Memory swap, the mechanism: a memory taken from another document makes the decoder read THAT document.
    /// With raw-token memory the logits follow the donor exactly (full attention over [donor ; current]) and
    /// move away from the document's own past. (The demo's --diagnose measures the same on trained memories.)
    /// </summary>
    [DataFact]
    public void ASwappedMemoryMakesTheDecoderReadTheDonorDocument()
    {
        using var weights = GoldenGenerationTests.LoadStories260K();
        var acc = weights.Accelerator;
        var model = new LlamaModel(weights);
        using var uio = new UioModel(model, new UioConfig { SegmentLength = 16, MemoryTokens = 4, EncoderRank = 2, EncoderAlpha = 4, TransferRank = 2, TransferAlpha = 4 });
        var ids = GoldenGenerationTests.ExpectedIds();
        var own = ids[..16];
        var donor = ids[40..56];
        var current = ids[16..32];
        float[] Full(int[] past)
        {
            using var tape = new Tape(acc);
            using var _ = tape.NoGrad();
            int vocab = weights.Config.VocabSize;
            return model.Forward(tape, [.. past, .. current]).Value.ToArray()[(16 * vocab)..];
        }
        float[] swapped;
        using (var tape = new Tape(acc))
        using (tape.NoGrad())
            swapped = uio.Decode(tape, current, [uio.RawTokenMemory(tape, donor)]).Value.ToArray();
        AssertClose(Full(donor), swapped, "decoder with the donor's memory");
        Assert.True(RelativeDifference(Full(own), swapped) > 100 * Tolerance, "the swapped memory must change what the decoder reads");
    }

    [Fact]
    public void AppendMemoryIsRefusedInsideASegment()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 3);
        using var uio = new UioModel(new LlamaModel(weights), UioModelTests.Small());
        using var session = new UioSession(uio);
        session.Feed([1, 2, 3]);
        using var tape = new Tape(weights.Accelerator);
        using var _ = tape.NoGrad();
        var memory = uio.RawTokenMemory(tape, [1, 2, 3, 4, 5, 6, 7, 8]);
        var e = Assert.Throws<InvalidOperationException>(() => session.AppendMemory(memory));
        Assert.Contains("3 tokens", e.Message);
    }
}
