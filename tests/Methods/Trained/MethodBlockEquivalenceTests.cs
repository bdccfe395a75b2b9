using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Methods.Compression;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>
/// The trained methods' adapted blocks (<see cref="QvLora.Block"/> for RMT, Transformer-XL and Memorizing's plain layers;
/// <see cref="AdaptedBlocks.Forward"/> for AutoCompressor and ICAE) run on the base's own <see cref="LlamaBlock.Forward"/>
/// with their LoRA through <see cref="IProjectionAdapters"/>. These tests pin them to the hand-written blocks they
/// replaced, kept here as the reference: outputs, keys and values, and every gradient (inputs, prefix keys and values,
/// adapters) must be bit-identical, for grouped-query heads, a local (sliding-window) layer and attention biases.
/// </summary>
public sealed class MethodBlockEquivalenceTests
{
    private static LlamaConfig Config(int localLayers, int kvHeads, bool bias) =>
        GradCheck.TinyConfig() with
        {
            Layers = 3, KvHeads = kvHeads, LocalLayers = localLayers, LocalWindow = localLayers > 0 ? 3 : 0, AttentionBias = bias,
        };

    private static void RandomiseB(IEnumerable<Lora> adapters, int seed)
    {
        var rng = new Rng(seed);
        foreach (var lora in adapters) lora.B.Value.CopyFrom(rng.Normal(lora.B.Value.Length, 0.2f));
    }

    /// <summary>x [T, in] through a frozen projection plus a LoRA kept apart from it, bias last (the old code's projection).</summary>
    private static Var ReferenceLora(Tape tape, Var x, Linear linear, Lora lora)
    {
        var y = tape.Lora(x, linear.Weight, lora.A, lora.B, lora.Scale);
        return linear.Bias is null ? y : tape.AddBias(y, linear.Bias);
    }

    /// <summary>QvLora.Block as it was written before it moved onto the base's block.</summary>
    private static Var ReferenceQvBlock(QvLora qv, Tape tape, int layer, Var x, ReadOnlySpan<int> positions, KvPrefix? front, AttentionMask mask, out LayerKv kv)
    {
        var baseModel = qv.Base;
        int tokens = x.Value.Dim(0);
        var c = baseModel.Config;
        var block = baseModel.Blocks[layer];
        var attention = block.Attention;
        var normed = block.AttentionNorm.Forward(tape, x);
        var query = tape.Rope(tape.Reshape(ReferenceLora(tape, normed, attention.Q, qv.Q(layer)), tokens, c.Heads, c.HeadDim), positions, baseModel.Rope);
        var rawKeys = tape.Reshape(attention.K.Forward(tape, normed), tokens, c.KvHeads, c.HeadDim);
        var keys = tape.Rope(rawKeys, positions, baseModel.Rope);
        var values = tape.Reshape(ReferenceLora(tape, normed, attention.V, qv.V(layer)), tokens, c.KvHeads, c.HeadDim);
        kv = new LayerKv(rawKeys, keys, values);
        var allKeys = front is { } f ? tape.ConcatRows(f.K, keys) : keys;
        var allValues = front is { } g ? tape.ConcatRows(g.V, values) : values;
        var o = tape.Attention(query, allKeys, allValues, mask);
        var h = tape.Add(x, attention.O.Forward(tape, tape.Reshape(o, tokens, c.Heads * c.HeadDim)));
        return tape.Add(h, block.Mlp.Forward(tape, block.FfnNorm.Forward(tape, h)));
    }

    /// <summary>AdaptedBlocks.Forward as it was written before it moved onto the base's block.</summary>
    private static Var ReferenceAdaptedForward(AdaptedBlocks blocks, Tape tape, Var x, ReadOnlySpan<int> positions)
    {
        var baseModel = blocks.Base;
        var c = baseModel.Config;
        int tokens = x.Value.Dim(0);
        Var Project(Var input, int layer, string name, Linear linear) =>
            blocks.Projections.Contains(name) ? ReferenceLora(tape, input, linear, blocks.Adapter(layer, name)) : linear.Forward(tape, input);
        for (int layer = 0; layer < c.Layers; layer++)
        {
            var block = baseModel.Blocks[layer];
            var attention = block.Attention;
            var normed = block.AttentionNorm.Forward(tape, x);
            var q = tape.Rope(tape.Reshape(Project(normed, layer, "q_proj", attention.Q), tokens, c.Heads, c.HeadDim), positions, baseModel.Rope);
            var k = tape.Rope(tape.Reshape(Project(normed, layer, "k_proj", attention.K), tokens, c.KvHeads, c.HeadDim), positions, baseModel.Rope);
            var v = tape.Reshape(Project(normed, layer, "v_proj", attention.V), tokens, c.KvHeads, c.HeadDim);
            var o = tape.Attention(q, k, v, c.DecoderMask(layer));
            x = tape.Add(x, Project(tape.Reshape(o, tokens, c.Heads * c.HeadDim), layer, "o_proj", attention.O));
            x = tape.Add(x, block.Mlp.Forward(tape, block.FfnNorm.Forward(tape, x)));
        }
        return x;
    }

    /// <summary>Backpropagates seeded cotangents on the outputs; returns the outputs' values and the leaves' gradients.</summary>
    private static (float[][] Outputs, float[][] Gradients) Backward(Tape tape, IReadOnlyList<Var> outputs, IReadOnlyList<Var> leaves, int seed)
    {
        var acc = tape.Accelerator;
        var values = outputs.Select(o => o.Value.ToArray()).ToArray();
        var rng = new Rng(seed);
        var seeds = outputs.Select(o => acc.FromArray(rng.Normal(o.Value.Length), o.Value.Shape)).ToArray();
        try
        {
            tape.Backward(outputs, seeds);
        }
        finally
        {
            foreach (var t in seeds) t.Dispose();
        }
        return (values, leaves.Select(p => p.Grad!.ToArray()).ToArray());
    }

    /// <summary>Exact equality of every output and gradient; the first <paramref name="flowing"/> gradients must be nonzero somewhere.</summary>
    private static void AssertBitIdentical((float[][] Outputs, float[][] Gradients) expected, (float[][] Outputs, float[][] Gradients) actual, int flowing)
    {
        Assert.Equal(expected.Outputs.Length, actual.Outputs.Length);
        for (int i = 0; i < expected.Outputs.Length; i++) Assert.Equal(expected.Outputs[i], actual.Outputs[i]);
        Assert.Equal(expected.Gradients.Length, actual.Gradients.Length);
        for (int i = 0; i < expected.Gradients.Length; i++)
        {
            Assert.Equal(expected.Gradients[i], actual.Gradients[i]);
            if (i < flowing) Assert.Contains(actual.Gradients[i], g => g != 0);
        }
    }

    /// <summary>
    /// Every layer through QvLora's block (the new one, or the reference), each reading a trainable prefix of
    /// <paramref name="front"/> rows when above zero; outputs: the last states and every layer's raw keys, keys, values.
    /// </summary>
    private static (float[][] Outputs, float[][] Gradients) RunQv(QvLora qv, float[] input, int[] positions, int front, bool reference, int seed)
    {
        var acc = qv.Base.Accelerator;
        var c = qv.Base.Config;
        var owned = new List<Tensor>();
        Var NewLeaf(float[] values, params int[] shape)
        {
            var t = acc.FromArray(values, shape);
            owned.Add(t);
            return Var.Leaf(t, requiresGrad: true);
        }
        var rng = new Rng(seed);
        var x = NewLeaf(input, positions.Length, c.Dim);
        var leaves = new List<Var>();
        var parameters = qv.NamedParameters().Select(p => p.Parameter).ToList();
        foreach (var p in parameters) p.ZeroGrad();
        try
        {
            using var tape = new Tape(acc, "qv block");
            var outputs = new List<Var>();
            var h = x;
            for (int layer = 0; layer < c.Layers; layer++)
            {
                KvPrefix? prefix = null;
                if (front > 0)
                {
                    var k = NewLeaf(rng.Normal(front * c.KvDim), front, c.KvHeads, c.HeadDim);
                    var v = NewLeaf(rng.Normal(front * c.KvDim), front, c.KvHeads, c.HeadDim);
                    leaves.Add(k);
                    leaves.Add(v);
                    prefix = new KvPrefix(k, v);
                }
                LayerKv kv;
                h = reference
                    ? ReferenceQvBlock(qv, tape, layer, h, positions, prefix, c.DecoderMask(layer), out kv)
                    : qv.Block(tape, layer, h, positions, prefix, c.DecoderMask(layer), out kv);
                outputs.AddRange([kv.RawKeys, kv.Keys, kv.Values]);
            }
            outputs.Add(h);
            // The input and the adapters first (every one shapes the outputs); a local layer may not see its prefix.
            return Backward(tape, outputs, [x, .. parameters, .. leaves], seed + 1);
        }
        finally
        {
            x.DisposeLeaf();
            foreach (var leaf in leaves) leaf.DisposeLeaf();
            foreach (var t in owned) t.Dispose();
        }
    }

    [Theory]
    [InlineData(0, 0, 2, false)]   // no prefix (RMT's forward, Memorizing's plain layers), GQA
    [InlineData(3, 0, 2, false)]   // a trainable prefix (Transformer-XL's cached segment, RMT's session memory)
    [InlineData(3, 1, 1, true)]    // a local first layer, MQA, q/k/v biases
    [InlineData(0, 1, 4, true)]    // no prefix, local first layer, plain multi-head, biases
    public void QvLoraBlockIsBitIdenticalToTheHandWrittenOne(int front, int localLayers, int kvHeads, bool bias)
    {
        var config = Config(localLayers, kvHeads, bias);
        using var weights = GradCheck.RandomWeights(config, seed: 80 + kvHeads);
        var model = new LlamaModel(weights);
        using var qv = new QvLora(model, rank: 2, alpha: 4f, new Random(5));
        RandomiseB(Enumerable.Range(0, config.Layers).SelectMany(l => new[] { qv.Q(l), qv.V(l) }), 81);
        var input = new Rng(82).Normal(6 * config.Dim);
        int[] positions = [4, 5, 6, 7, 8, 9];

        var expected = RunQv(qv, input, positions, front, reference: true, seed: 83);
        var actual = RunQv(qv, input, positions, front, reference: false, seed: 83);
        AssertBitIdentical(expected, actual, flowing: 1 + 4 * config.Layers);
        if (front > 0) Assert.Contains(actual.Gradients[^1], g => g != 0);   // the last (global) layer reads its prefix
    }

    private static (float[][] Outputs, float[][] Gradients) RunAdapted(AdaptedBlocks blocks, float[] input, int[]? positions, bool reference, int seed)
    {
        var acc = blocks.Base.Accelerator;
        var c = blocks.Base.Config;
        int tokens = input.Length / c.Dim;
        using var xs = acc.FromArray(input, [tokens, c.Dim]);
        var x = Var.Leaf(xs, requiresGrad: true);
        var parameters = blocks.Parameters().ToList();
        foreach (var p in parameters) p.ZeroGrad();
        try
        {
            using var tape = new Tape(acc, "adapted blocks");
            var at = positions ?? Enumerable.Range(0, tokens).ToArray();
            var y = reference ? ReferenceAdaptedForward(blocks, tape, x, at) : blocks.Forward(tape, x, positions);
            return Backward(tape, [y], [x, .. parameters], seed);
        }
        finally
        {
            x.DisposeLeaf();
        }
    }

    [Theory]
    [InlineData("q_proj,k_proj,v_proj,o_proj", 0, 2, false, false)]   // every attention projection (AutoCompressor, ICAE's default)
    [InlineData("q_proj,v_proj", 0, 2, true, true)]                   // q and v only, biases, given positions
    [InlineData("k_proj,o_proj", 1, 1, true, false)]                  // a local first layer, MQA
    [InlineData("o_proj", 1, 4, false, true)]                         // output only, plain multi-head
    public void AdaptedBlocksAreBitIdenticalToTheHandWrittenOnes(string projections, int localLayers, int kvHeads, bool bias, bool givenPositions)
    {
        var config = Config(localLayers, kvHeads, bias);
        using var weights = GradCheck.RandomWeights(config, seed: 90 + kvHeads);
        var model = new LlamaModel(weights);
        using var blocks = new AdaptedBlocks(model, rank: 2, alpha: 4f, projections.Split(','), new Random(6), "test.");
        RandomiseB(Enumerable.Range(0, config.Layers).SelectMany(l => blocks.Projections.Select(p => blocks.Adapter(l, p))), 91);
        var input = new Rng(92).Normal(7 * config.Dim);
        int[]? positions = givenPositions ? [3, 4, 5, 6, 7, 8, 9] : null;

        var expected = RunAdapted(blocks, input, positions, reference: true, seed: 93);
        var actual = RunAdapted(blocks, input, positions, reference: false, seed: 93);
        AssertBitIdentical(expected, actual, flowing: expected.Gradients.Length);
    }
}
