using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;

namespace UioLlm.Tests.Uio;

/// <summary>
/// UIO.md "Position budget": memory rows + local tokens must stay within the base's trained context unless the
/// user opts into extrapolation or a memory cap that fits.
/// </summary>
public sealed class PositionBudgetTests
{
    [Fact]
    public void TheBudgetFollowsTheFormula()
    {
        var config = new UioConfig { SegmentLength = 32, MemoryTokens = 1 };
        Assert.Equal(32, config.MaxMemorySegments(64));          // (64 - 32) / 1
        Assert.Equal(33 * 32, config.MaxContextTokens(64));      // 16.5 windows of 64
        Assert.Equal(-1, config.MaxMemorySegments(16));
        Assert.Equal(0, config.MaxContextTokens(16));
        // The paper's evaluation: 96 memories of 32 rows + 1024 local tokens = exactly 4096 positions.
        var paper = new UioConfig { SegmentLength = 1024, MemoryTokens = 32 };
        Assert.Equal(96, paper.MaxMemorySegments(4096));
        Assert.Equal(97 * 1024, paper.MaxContextTokens(4096));
        Assert.Equal(long.MaxValue, (config with { MemoryCapSegments = 10 }).MaxContextTokens(64));
        Assert.Equal(20, (config with { TrainedContext = 52 }).MaxMemorySegments(64));   // an explicit budget wins
    }

    [Fact]
    public void ConfigsThatCannotFitAreRefusedUnlessExtrapolationIsAllowed()
    {
        var model = GradCheck.TinyConfig();   // 64 positions
        var tooLong = new UioConfig { SegmentLength = 128, MemoryTokens = 8, EncoderRank = 2, TransferRank = 2 };
        var e = Assert.Throws<ArgumentException>(() => tooLong.Validate(model));
        Assert.Contains("128", e.Message);
        Assert.Contains("64", e.Message);
        (tooLong with { AllowExtrapolation = true }).Validate(model);
        var cap = new UioConfig { SegmentLength = 32, MemoryTokens = 8, EncoderRank = 2, TransferRank = 2, MemoryCapSegments = 5 };
        Assert.Contains("cap at most 4", Assert.Throws<ArgumentException>(() => cap.Validate(model)).Message);
        (cap with { MemoryCapSegments = 4 }).Validate(model);
    }

    [Fact]
    public void TheDecoderRefusesToReadPastTheBudgetOnBothPaths()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 12);   // 64 positions
        var model = new LlamaModel(weights);
        var config = UioModelTests.Small(l: 8, n: 4);   // (64 - 8) / 4 = 14 memories fit: 15 segments = 120 tokens
        using var uio = new UioModel(model, config);
        var text = Enumerable.Range(0, 200).Select(i => i % 30 + 1).ToArray();

        using (var session = new UioSession(uio))
        {
            session.Feed(text.AsSpan(0, 120));   // 14 memories (56 rows) + 8 local tokens = 64 positions: the whole budget
            // The 15th segment was compressed at token 120: 60 memory rows leave room for 4 more local tokens.
            session.Feed(text.AsSpan(120, 4));
            var e = Assert.Throws<PositionBudgetException>(() => session.Feed(text.AsSpan(124, 1)));
            Assert.Contains("60 memory rows (15 segments x n = 4) + 5 local tokens = 65 positions", e.Message);
            Assert.Contains("trained on 64", e.Message);
            Assert.Contains("at most 14 segments", e.Message);
        }
        using (var tape = new Tape(weights.Accelerator))
        using (tape.NoGrad())
        {
            var memory = uio.Compress(tape, text.AsSpan(0, 15 * 8));
            Assert.Throws<PositionBudgetException>(() => uio.Decode(tape, text.AsSpan(0, 8), [memory]));
            var fits = uio.Compress(tape, text.AsSpan(0, 14 * 8));
            Assert.Equal(8, uio.Decode(tape, text.AsSpan(0, 8), [fits]).Value.Dim(0));
        }
        // Opting in reads on; so does a cap that fits.
        using (var free = new UioModel(model, config with { AllowExtrapolation = true }))
        using (var session = new UioSession(free))
            session.Feed(text);
        using (var capped = new UioModel(model, config with { MemoryCapSegments = 14 }))
        using (var session = new UioSession(capped))
        {
            session.Feed(text);
            Assert.Equal(14, session.MemorySegments);
        }
    }
}
