using UioLlm.Kernels;
using UioLlm.Kernels.Distributed;

namespace UioLlm.Model.Modules;

/// <summary>
/// The full-attention model over a sequence sharded across the processes of a group (sequence parallelism):
/// rank r holds tokens r*T .. r*T+T-1 of one long sequence; embeddings, norms, projections, RoPE (at the global
/// positions) and the MLP are per token, and every layer's attention is <see cref="RingAttention"/>, so no rank
/// holds more than its own and two passing blocks of keys and values. This is the full-attention baseline for contexts whose KV
/// does not fit one machine. Tape-free (evaluation); global causal attention only (a model with local layers is
/// refused).
/// </summary>
public static class SequenceParallel
{
    /// <summary>Next-token logits [T, vocab] of this rank's block of T tokens (every rank passes the same T).</summary>
    public static Tensor Logits(LlamaModel model, ICommunicator group, ReadOnlySpan<int> ids)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(group);
        var config = model.Config;
        if (config.LocalLayers > 0)
            throw new ArgumentException($"SequenceParallel: layers 0..{config.LocalLayers - 1} are local (window {config.LocalWindow}); ring attention here is global causal attention only");
        if (ids.IsEmpty) throw new ArgumentException("SequenceParallel: each rank needs at least one token", nameof(ids));
        foreach (int id in ids)
            if ((uint)id >= (uint)config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"SequenceParallel: token id must be 0..{config.VocabSize - 1}");
        int tokens = ids.Length;
        var acc = model.Accelerator;
        var k = acc.Kernels;
        using var b = new InferenceBuffers(config, acc, tokens);
        var positions = new int[tokens];
        for (int t = 0; t < tokens; t++) positions[t] = group.Rank * tokens + t;
        using var keys = acc.Scratch.Rent([tokens, config.KvHeads, config.HeadDim]);
        k.Embedding(model.Embedding.Value, ids, b.X);
        foreach (var block in model.Blocks)
        {
            var a = block.Attention;
            k.RmsNorm(b.X, block.AttentionNorm.Weight.Value, b.Normed, b.Rstd, block.AttentionNorm.Eps);
            a.Q.Apply(k, b.Normed, b.Q);
            a.K.Apply(k, b.Normed, b.K);
            a.V.Apply(k, b.Normed, b.V);
            var q3 = b.Q.View(tokens, a.Heads, a.HeadDim);
            k.Rope(q3, q3, positions, a.Rope);
            k.Rope(b.K.View(tokens, a.KvHeads, a.HeadDim), keys, positions, a.Rope);
            RingAttention.Forward(group, q3, keys, b.V.View(tokens, a.KvHeads, a.HeadDim),
                b.Attended.View(tokens, a.Heads, a.HeadDim), b.Lse.View(a.Heads, tokens), causal: true);
            a.O.Apply(k, b.Attended, b.Delta);
            k.Add(b.X, b.Delta, b.X);
            k.RmsNorm(b.X, block.FfnNorm.Weight.Value, b.Normed, b.Rstd, block.FfnNorm.Eps);
            block.Mlp.Infer(k, b, tokens);
            k.Add(b.X, b.Delta, b.X);
        }
        k.RmsNorm(b.X, model.FinalNorm.Weight.Value, b.Normed, b.Rstd, model.FinalNorm.Eps);
        var logits = acc.Allocate(tokens, config.VocabSize);
        model.Head.Apply(k, b.Normed, logits);
        return logits;
    }
}
