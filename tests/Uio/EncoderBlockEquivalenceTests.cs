using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Uio;

/// <summary>
/// UIO's encoder runs on the base's own blocks (<see cref="LlamaBlock.ForwardBatch"/> with the encoder LoRA through
/// <see cref="IProjectionAdapters"/>). These tests pin it to the hand-written encoder it replaced, kept here as the
/// reference: the memory states and every encoder gradient must be bit-identical, for memory tokens and raw tokens,
/// several segments, grouped-query heads and a local (sliding-window) first layer.
/// </summary>
public sealed class EncoderBlockEquivalenceTests
{
    /// <summary>
    /// The encoder as it was written before it moved onto the block: per layer attention norm, the h_mem gather, Q and V
    /// through the encoder LoRA, K plain, RoPE, attention over [segments, l + n] under the encoder mask, O, residual,
    /// FFN norm, MLP, residual; the last layer stops after its norm.
    /// </summary>
    private static Memory ReferenceEncode(UioModel uio, Tape tape, ReadOnlySpan<int> tokens, bool rawTokens)
    {
        var config = uio.Config;
        var baseModel = uio.Base;
        int l = config.SegmentLength, n = config.MemoryTokens, width = l + n;
        int segments = tokens.Length / l;
        var c = baseModel.Config;
        var embedded = baseModel.Embed(tape, tokens);
        var memoryRows = tape.Embedding(uio.MemoryEmbedding, new int[n]);
        var parts = new List<Var>(2 * segments);
        for (int b = 0; b < segments; b++)
        {
            parts.Add(tape.SliceRows(embedded, b * l, l));
            parts.Add(memoryRows);
        }
        var x = tape.ConcatRows(parts);
        int[] positions = uio.EncoderPositions();
        int rows = rawTokens ? l : n;
        var memoryIndex = new int[segments * rows];
        for (int b = 0; b < segments; b++)
            for (int i = 0; i < rows; i++) memoryIndex[b * rows + i] = b * width + (rawTokens ? 0 : l) + i;
        var states = new Var[c.Layers];
        for (int layer = 0; layer < c.Layers; layer++)
        {
            var block = baseModel.Blocks[layer];
            var adapters = uio.Layers[layer];
            var normed = block.AttentionNorm.Forward(tape, x);
            states[layer] = tape.Embedding(normed, memoryIndex);
            if (layer == c.Layers - 1) break;
            var attention = block.Attention;
            var q = tape.Lora(normed, attention.Q.Weight, adapters.EncoderQ.A, adapters.EncoderQ.B, adapters.EncoderQ.Scale);
            var k = tape.Linear(normed, attention.K.Weight);
            var v = tape.Lora(normed, attention.V.Weight, adapters.EncoderV.A, adapters.EncoderV.B, adapters.EncoderV.Scale);
            q = tape.Rope(tape.Reshape(q, segments, width, c.Heads, c.HeadDim), positions, baseModel.Rope);
            k = tape.Rope(tape.Reshape(k, segments, width, c.KvHeads, c.HeadDim), positions, baseModel.Rope);
            v = tape.Reshape(v, segments, width, c.KvHeads, c.HeadDim);
            var o = tape.Attention(q, k, v, uio.EncoderMaskAt(layer));
            x = tape.Add(x, attention.O.Forward(tape, tape.Reshape(o, segments * width, c.Heads * c.HeadDim)));
            x = tape.Add(x, block.Mlp.Forward(tape, block.FfnNorm.Forward(tape, x)));
        }
        return new Memory(states, segments, rows);
    }

    /// <summary>States of every layer, then the gradient of every encoder parameter for seeded cotangents on the states.</summary>
    private static (float[][] States, float[][] Gradients) Run(UioModel uio, int[] tokens, bool rawTokens, bool reference, int seed)
    {
        var acc = uio.Accelerator;
        var parameters = uio.EncoderParameters().ToList();
        foreach (var p in parameters) p.ZeroGrad();
        using var tape = new Tape(acc, "encoder");
        var memory = reference ? ReferenceEncode(uio, tape, tokens, rawTokens) : rawTokens ? uio.RawTokenMemory(tape, tokens) : uio.Compress(tape, tokens);
        var states = memory.States.Select(s => s.Value.ToArray()).ToArray();
        var rng = new Rng(seed);
        var seeds = memory.States.Select(s => acc.FromArray(rng.Normal(s.Value.Length), s.Value.Shape)).ToArray();
        try
        {
            tape.Backward(memory.States, seeds);
        }
        finally
        {
            foreach (var t in seeds) t.Dispose();
        }
        return (states, parameters.Select(p => p.Grad!.ToArray()).ToArray());
    }

    [Theory]
    [InlineData(false, 0, 2)]   // memory tokens, global layers, GQA
    [InlineData(true, 0, 2)]    // raw tokens (diagnostic memory)
    [InlineData(false, 1, 1)]   // a local first layer (sliding window 3), MQA
    [InlineData(true, 1, 4)]    // raw tokens, local first layer, plain multi-head
    public void BlockEncoderIsBitIdenticalToTheHandWrittenOne(bool rawTokens, int localLayers, int kvHeads)
    {
        var config = GradCheck.TinyConfig() with { Layers = 3, KvHeads = kvHeads, LocalLayers = localLayers, LocalWindow = localLayers > 0 ? 3 : 0 };
        using var weights = GradCheck.RandomWeights(config, seed: 70 + kvHeads);
        using var uio = new UioModel(new LlamaModel(weights), UioModelTests.Small(l: 8, n: 2), seed: 3);
        UioModelTests.Randomise(uio, 71);
        int[] tokens = new Rng(72).Ints(3 * 8, 0, config.VocabSize);

        var expected = Run(uio, tokens, rawTokens, reference: true, seed: 73);
        var actual = Run(uio, tokens, rawTokens, reference: false, seed: 73);
        Assert.Equal(config.Layers, actual.States.Length);
        for (int layer = 0; layer < config.Layers; layer++) Assert.Equal(expected.States[layer], actual.States[layer]);
        Assert.Equal(expected.Gradients.Length, actual.Gradients.Length);
        for (int i = 0; i < expected.Gradients.Length; i++)
        {
            Assert.Equal(expected.Gradients[i], actual.Gradients[i]);
            // Every layer's encoder LoRA but the last shapes the memory (the parameters: <mem>, then q A, q B, v A, v B per layer).
            if (i >= 1 && i < expected.Gradients.Length - 4) Assert.Contains(actual.Gradients[i], g => g != 0);
        }
    }

    [Fact]
    public void WithFreshAdaptersRawTokenStatesAreTheBaseBlocksOwnAttentionInputsBiasesIncluded()
    {
        // A Qwen2-style base with q/k/v biases: the encoder is the base's block, so its biases count as the decoder's do.
        var config = GradCheck.TinyConfig() with { Layers = 3, AttentionBias = true };
        using var weights = GradCheck.RandomWeights(config, seed: 74);
        var model = new LlamaModel(weights);
        using var uio = new UioModel(model, UioModelTests.Small(l: 8, n: 2), seed: 5);
        int[] tokens = new Rng(75).Ints(8, 0, config.VocabSize);
        using var tape = new Tape(weights.Accelerator);
        using var _ = tape.NoGrad();
        var memory = uio.RawTokenMemory(tape, tokens);
        var x = model.Embed(tape, tokens);
        var positions = Enumerable.Range(0, tokens.Length).ToArray();
        for (int layer = 0; layer < config.Layers; layer++)
        {
            Var? input = null;
            x = model.Blocks[layer].Forward(tape, x, positions, attentionInput: normed => input = normed);
            Check.Close(input!.Value.ToArray(), memory.States[layer].Value.ToArray(), 1e-5, 1e-5, $"layer {layer}: raw-token state vs the base's attention input");
        }
    }
}
