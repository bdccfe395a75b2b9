using UioLlm.Model.Autograd;
using UioLlm.Model.Baselines;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Baselines;

public sealed class StreamingLlmTests
{
    [Fact]
    public void WithinItsCapacityItIsTheBaseModel()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 60);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(61).Ints(9, 0, 37);
        using var streaming = new StreamingLlm(model, window: 6, sinks: 4);
        var streamed = streaming.Feed(ids.AsSpan(0, 4)).Concat(streaming.Feed(ids.AsSpan(4))).ToArray();
        using var tape = new Tape(weights.Accelerator);
        using var _ = tape.NoGrad();
        var logits = model.Forward(tape, ids).Value.ToArray();
        Assert.True(double.IsNaN(streamed[0]));
        for (int t = 1; t < ids.Length; t++)
            Assert.Equal(UioSession.LogSoftmaxAt(logits.AsSpan((t - 1) * 37, 37), ids[t]), streamed[t], 4);
    }

    [Fact]
    public void BeyondItKeepsTheSinksAndTheWindowAtCacheIndexPositions()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 62);
        var model = new LlamaModel(weights);
        int[] ids = new Rng(63).Ints(20, 0, 37);
        using var streaming = new StreamingLlm(model, window: 5, sinks: 2);
        streaming.Feed(ids.AsSpan(0, 15));
        Assert.Equal(7, streaming.Length);

        // Feeding one more token first evicts the oldest non-sink row (row 2); the token then attends to the
        // 6 remaining rows rotated at 0..5 and sits at position 6: exactly the reference forward with those
        // rows as a key/value prefix.
        var c = weights.Config;
        int[] kept = [0, 1, 3, 4, 5, 6];
        double[][][] Rows(Func<int, UioLlm.Kernels.Tensor> pick) => Enumerable.Range(0, c.Layers).Select(layer =>
        {
            var flat = pick(layer).ToArray();
            return kept.Select(r => flat.AsSpan(r * c.KvDim, c.KvDim).ToArray().Select(v => (double)v).ToArray()).ToArray();
        }).ToArray();
        var expected = LlamaReference.Logits(weights, [ids[15]], Rows(l => streaming.Cached(l).Keys), Rows(l => streaming.Cached(l).Values));
        streaming.Feed([ids[15]]);
        Check.Close(Enumerable.Range(0, 37).Select(j => expected[0, j]).ToArray(), streaming.LastLogits, 1e-4, 1e-3, "logits after eviction");
        streaming.Feed([ids[16]]);
        Assert.Equal(7, streaming.Length);
        Assert.Equal(17, streaming.TokensSeen);
        Assert.Throws<ArgumentOutOfRangeException>(() => new StreamingLlm(model, window: 0));
    }
}
