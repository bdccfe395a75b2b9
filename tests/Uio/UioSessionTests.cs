using UioLlm.Model.Autograd;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Uio;

public sealed class UioSessionTests
{
    private static UioModel TinyUio(int seed, UioConfig? config = null)
    {
        var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 4096 }, seed);
        var uio = new UioModel(new LlamaModel(weights), config ?? UioModelTests.Small());
        UioModelTests.Randomise(uio, seed + 1);
        return uio;
    }

    private static void Same(double[] expected, double[] actual, string what, double tol = 2e-4)
    {
        Assert.Equal(expected.Length, actual.Length);
        Assert.True(double.IsNaN(expected[0]) && double.IsNaN(actual[0]), $"{what}: the first token has no context");
        for (int i = 1; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"{what}: token {i}: {actual[i]} vs {expected[i]}");
    }

    [Fact]
    public void OneCallPiecesAndTokenByTokenGiveTheSameLogProbs()
    {
        using var uio = TinyUio(40);
        int[] text = new Rng(41).Ints(45, 0, 37);        // 5 whole segments of 8 and a remainder
        using var whole = new UioSession(uio, encoderBatch: 2);
        var expected = whole.Feed(text);
        Assert.Equal(5, whole.MemorySegments);
        Assert.Equal(10, whole.MemoryTokens);
        Assert.Equal(5, whole.LocalTokens);

        using var single = new UioSession(uio);
        var oneByOne = text.Select(t => single.Feed([t])[0]).ToArray();
        Same(expected, oneByOne, "token by token");

        var rng = new Random(42);
        using var pieces = new UioSession(uio, encoderBatch: 3);
        var got = new List<double>();
        for (int at = 0; at < text.Length;)
        {
            int size = Math.Min(rng.Next(1, 19), text.Length - at);
            got.AddRange(pieces.Feed(text.AsSpan(at, size)));
            at += size;
        }
        Same(expected, [.. got], "random pieces");
        Assert.Equal(whole.LastLogits.ToArray(), pieces.LastLogits.ToArray(), (a, b) => Math.Abs(a - b) < 1e-4);
    }

    [Fact]
    public void SessionLogProbsEqualTheDecoderOverEarlierSegmentsMemories()
    {
        using var uio = TinyUio(43);
        int[] text = new Rng(44).Ints(24, 0, 37);        // 3 segments
        using var session = new UioSession(uio);
        var streamed = session.Feed(text);

        using var tape = new Tape(uio.Accelerator);
        using var _ = tape.NoGrad();
        var memories = new List<Memory>();
        for (int s = 0; s < 3; s++)
        {
            var segment = text.AsSpan(s * 8, 8);
            var logits = uio.Decode(tape, segment, memories).Value.ToArray();
            for (int t = 1; t < 8; t++)
            {
                double expected = UioSession.LogSoftmaxAt(logits.AsSpan((t - 1) * 37, 37), segment[t]);
                Assert.True(Math.Abs(expected - streamed[s * 8 + t]) < 2e-4, $"segment {s} token {t}: {streamed[s * 8 + t]} vs {expected}");
            }
            memories.Add(uio.Compress(tape, segment));
        }
    }

    [Fact]
    public void PrefillThenGenerateEqualsFeedingAndRecompressesAtTheSegmentLength()
    {
        using var uio = TinyUio(45);
        int[] prompt = new Rng(46).Ints(16, 0, 37);      // exactly two segments: the last is decoded, then compressed
        var options = new GenerationOptions { MaxNewTokens = 20, StopTokens = [] };
        using var fed = new UioSession(uio);
        fed.Feed(prompt);
        var a = fed.Generate(options);
        using var prefilled = new UioSession(uio);
        prefilled.Prefill(prompt);
        Assert.Equal(2, prefilled.MemorySegments);
        var streamed = new List<int>();
        var b = prefilled.Generate(options, streamed.Add);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(b.Tokens, streamed);
        Assert.Equal(20, b.Tokens.Length);
        Assert.Equal(4, prefilled.MemorySegments);        // 16 + 20 tokens = 4 whole segments + 4 local
        Assert.Equal(4, prefilled.LocalTokens);
        Assert.Equal(36, prefilled.TokensSeen);

        using var empty = new UioSession(uio);
        Assert.Throws<InvalidOperationException>(() => empty.Generate(options));
    }

    [Fact]
    public void AMemoryCapKeepsTheNewestSegmentsAtPositionsFromZero()
    {
        using var uio = TinyUio(47, UioModelTests.Small() with { MemoryCapSegments = 2 });
        int[] text = new Rng(48).Ints(40, 0, 37);
        using var session = new UioSession(uio);
        var streamed = session.Feed(text);
        Assert.Equal(2, session.MemorySegments);
        Assert.Equal(4, session.MemoryTokens);

        // Segment 4 is decoded against the memories of segments 2 and 3 only, rotated from position 0.
        using var tape = new Tape(uio.Accelerator);
        using var _ = tape.NoGrad();
        var memories = new List<Memory> { uio.Compress(tape, text.AsSpan(16, 8)), uio.Compress(tape, text.AsSpan(24, 8)) };
        var logits = uio.Decode(tape, text.AsSpan(32, 8), memories).Value.ToArray();
        for (int t = 1; t < 8; t++)
            Assert.True(Math.Abs(UioSession.LogSoftmaxAt(logits.AsSpan((t - 1) * 37, 37), text[32 + t]) - streamed[32 + t]) < 2e-4, $"token {t}");
    }
}
