using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Reference;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Uio;

public sealed class UioModelTests
{
    internal static UioConfig Small(int l = 8, int n = 2) => new()
    {
        SegmentLength = l, MemoryTokens = n, EncoderRank = 2, EncoderAlpha = 4, TransferRank = 3, TransferAlpha = 3,
    };

    /// <summary>Gives every LoRA B a seeded non-zero value (fresh adapters are exact no-ops).</summary>
    internal static void Randomise(UioModel uio, int seed, float std = 0.2f)
    {
        var rng = new Rng(seed);
        foreach (var layer in uio.Layers)
            foreach (var (_, lora) in layer.All()) lora.B.Value.CopyFrom(rng.Normal(lora.B.Value.Length, std));
    }

    private static float[] Run(Func<Tape, Var> forward, Accelerator acc)
    {
        using var tape = new Tape(acc);
        using var _ = tape.NoGrad();
        return forward(tape).Value.ToArray();
    }

    [Fact]
    public void ConfigIsValidated()
    {
        Small().Validate();
        Assert.Equal(4, Small().Stride);
        Assert.Contains("divisible", Assert.Throws<ArgumentException>(() => Small(10, 4).Validate()).Message);
        Assert.Throws<ArgumentException>(() => Small(8, 0).Validate());
        Assert.Throws<ArgumentException>(() => Small(4, 8).Validate());
        Assert.Throws<ArgumentException>(() => (Small() with { MemoryCapSegments = -1 }).Validate());
        Assert.Throws<ArgumentException>(() => (Small() with { EncoderAlpha = 0 }).Validate());
    }

    [Fact]
    public void WithoutMemoryTheDecoderIsTheBaseModel()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 30);
        var baseModel = new LlamaModel(weights);
        using var uio = new UioModel(baseModel, Small());
        Randomise(uio, 1);
        int[] ids = [4, 9, 1, 30, 22, 7];
        var expected = Run(t => baseModel.Forward(t, ids), weights.Accelerator);
        Assert.Equal(expected, Run(t => uio.Decode(t, ids, []), weights.Accelerator));
        // A fresh UIO model (all LoRA B = 0) starts from the base model's projections too.
        using var fresh = new UioModel(baseModel, Small());
        Assert.All(fresh.TrainableParameters().Where(p => p.Name!.Contains("lora_B")), p => Assert.All(p.Value.ToArray(), v => Assert.Equal(0f, v)));
        Check.Close(weights.TokenEmbedding.Row(weights.Config.EosId).ToArray(), fresh.MemoryEmbedding.Value.ToArray(), 0, 0, "<mem> starts as </s>");
    }

    [Fact]
    public void DecoderEqualsADenseReferenceOverRotatedMemoryAndTokens()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 31);
        var baseModel = new LlamaModel(weights);
        using var uio = new UioModel(baseModel, Small());
        Randomise(uio, 2);
        var c = weights.Config;
        var rng = new Rng(3);
        // Two memories (one of two segments, one of one), states drawn at random.
        Memory MakeMemory(int segments) => new(
            Enumerable.Range(0, c.Layers).Select(_ => Var.Leaf(weights.Accelerator.FromArray(rng.Normal(segments * 2 * c.Dim), [segments * 2, c.Dim]))).ToArray(),
            segments, 2);
        var memories = new[] { MakeMemory(2), MakeMemory(1) };
        int[] ids = [5, 17, 3, 3, 28];

        // Reference memory K/V: K = h W_K^T + s (h A^T) B^T (un-rotated), V likewise, in double.
        double[][][] Project(Func<UioLayerAdapters, Lora> pick, Func<LlamaLayerWeights, Tensor> weight) =>
            Enumerable.Range(0, c.Layers).Select(layer =>
            {
                var h = memories.SelectMany(m => Rows(m.States[layer].Value.ToArray(), c.Dim)).ToArray();
                var lora = pick(uio.Layers[layer]);
                var w = weight(weights.Layers[layer]).ToArray();
                var a = lora.A.Value.ToArray();
                var b = lora.B.Value.ToArray();
                int outDim = c.KvDim, r = lora.Rank;
                return h.Select(row =>
                {
                    var xa = Enumerable.Range(0, r).Select(i => Enumerable.Range(0, c.Dim).Sum(j => row[j] * a[i * c.Dim + j])).ToArray();
                    return Enumerable.Range(0, outDim).Select(o =>
                        Enumerable.Range(0, c.Dim).Sum(j => row[j] * w[o * c.Dim + j]) + lora.Scale * Enumerable.Range(0, r).Sum(i => xa[i] * b[o * r + i])).ToArray();
                }).ToArray();
            }).ToArray();
        var memoryK = Project(a => a.TransferK, l => l.Wk);
        var memoryV = Project(a => a.TransferV, l => l.Wv);
        var expected = LlamaReference.Logits(weights, ids, memoryK, memoryV);
        var actual = Run(t => uio.Decode(t, ids, memories), weights.Accelerator);
        Check.Close(expected.Cast<double>().ToArray(), actual, 1e-4, 1e-3, "decoder logits over [memory ; tokens]");
    }

    private static IEnumerable<double[]> Rows(float[] flat, int width)
    {
        for (int r = 0; r < flat.Length / width; r++) yield return flat.AsSpan(r * width, width).ToArray().Select(v => (double)v).ToArray();
    }

    [Fact]
    public void EncoderMaskAndPositionsFollowUioMdElementByElement()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 32);
        using var uio = new UioModel(new LlamaModel(weights), Small(l: 8, n: 2));
        // l = 8, n = 2, c = 4: ordinary j at j; memory i at (i + 1) * c.
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7, 4, 8], uio.EncoderPositions());
        var mask = uio.EncoderMask;
        const int l = 8, n = 2, c = 4, T = l + n;
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++)
            {
                bool expected = i < l
                    ? j < l && j <= i                                    // ordinary: causal, never memory
                    : (j < l && j < (i - l + 1) * c) || j == i;          // memory i-l: its first (i-l+1)c tokens and itself
                Assert.True(expected == mask.IsVisible(0, 1, i, j, T, T), $"query {i} key {j}: expected visible={expected}");
            }
    }

    [Fact]
    public void BatchedCompressionEqualsOneByOne()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 33);
        using var uio = new UioModel(new LlamaModel(weights), Small());
        Randomise(uio, 4);
        var rng = new Rng(5);
        int[] tokens = rng.Ints(3 * 8, 0, 37);
        using var tape = new Tape(weights.Accelerator);
        using var _ = tape.NoGrad();
        var batched = uio.Compress(tape, tokens);
        Assert.Equal(3, batched.Segments);
        for (int s = 0; s < 3; s++)
        {
            var single = uio.Compress(tape, tokens.AsSpan(s * 8, 8));
            for (int layer = 0; layer < weights.Config.Layers; layer++)
                Check.Close(single.States[layer].Value.ToArray(), batched.States[layer].Value.Slice(s * 2, 2).ToArray(), 1e-5, 1e-4,
                    $"segment {s} layer {layer}");
        }
        // Segments are independent: changing segment 0 leaves segment 2's memory untouched.
        var changed = (int[])tokens.Clone();
        changed[3] = (changed[3] + 1) % 37;
        var other = uio.Compress(tape, changed);
        Assert.Equal(batched.States[1].Value.Slice(4, 2).ToArray(), other.States[1].Value.Slice(4, 2).ToArray());
        Assert.NotEqual(batched.States[1].Value.Slice(0, 2).ToArray(), other.States[1].Value.Slice(0, 2).ToArray());
        Assert.Throws<ArgumentException>(() => uio.Compress(tape, tokens.AsSpan(0, 7)));
    }

    [DataFact]
    public void GradientsThroughEncoderTransferHeadAndDecoderMatchFiniteDifferencesOnStories260K()
    {
        using var weights = GoldenGenerationTests.LoadStories260K();
        using var uio = new UioModel(new LlamaModel(weights), Small(l: 16, n: 4));
        Randomise(uio, 6, std: 0.05f);
        var ids = GoldenGenerationTests.ExpectedIds();
        var segments = ids[..32];                 // two segments compressed
        var decoded = ids[32..48];                // the decoder's segment
        var targets = ids[33..49];
        var parameters = uio.TrainableParameters().ToList();
        foreach (var p in parameters) p.ZeroGrad();

        // The estimator's pattern: encoder graph on its own tape, the decoder reads detached leaves, then
        // the leaves' gradients seed the encoder tape.
        var encoder = new Tape(weights.Accelerator, "encoder");
        var memory = uio.Compress(encoder, segments);
        var leaves = memory.Detach();
        using (var decoder = new Tape(weights.Accelerator, "decoder"))
            decoder.Backward(uio.DecoderLoss(decoder, decoded, targets, [leaves]));
        encoder.Backward(memory.States, leaves.States.Select(s => s.Grad!).ToArray());
        encoder.Dispose();
        leaves.DisposeLeaves();
        // Memory states are read at each layer's attention input, so the last layer's encoder LoRA shapes no
        // memory: its gradient is exactly zero. Every other parameter must receive one.
        int last = weights.Config.Layers - 1;
        var lastEncoder = uio.Layers[last].EncoderQ.Parameters().Concat(uio.Layers[last].EncoderV.Parameters()).ToHashSet();
        Assert.All(parameters, p => Assert.Equal(!lastEncoder.Contains(p), p.Grad!.ToArray().Any(g => g != 0)));

        double Loss()
        {
            using var t = new Tape(weights.Accelerator);
            using var _ = t.NoGrad();
            return uio.DecoderLoss(t, decoded, targets, [uio.Compress(t, segments)]).Value.ToArray()[0];
        }
        GradCheck.PerTensor(Loss, parameters, new Rng(7), 1e-2, 3e-2, "UIO on stories260K");
    }
}
