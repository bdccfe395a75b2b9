using UioLlm.Model;
using UioLlm.Model.Uio;

namespace UioLlm.Bench;

/// <summary>
/// The matrix FLOPs one UIO training step needs, counted op by op for this implementation (the base is
/// frozen, so no weight gradients of W; only the activation gradients that reach a trainable value).
/// </summary>
/// <remarks>
/// Counting rules (1 multiply-add = 2 FLOPs; norms, RoPE, SwiGLU, softmax and cross-entropy are not counted):
/// <list type="bullet">
/// <item>Frozen linear, m rows, k -> n: forward 2mkn; backward dX only, 2mkn (no dW: the weight is frozen).</item>
/// <item>LoRA of rank r on top: forward 2mr(k+n); backward 4mr(k+n) (dA, dB, and dX through A and B).</item>
/// <item>Attention: 4·D FLOPs per visible query-key pair per head forward (QK^T and PV); backward 8·D (dP, dV, dS->dQ, dK);
/// the decoder's layer 0 needs no dQ (its queries come from the frozen embedding): 6·D there.</item>
/// <item>Decoder segment t reads M = t·n memory rows: transfer head K/V (frozen + LoRA) on M rows per layer, attention over
/// M + causal keys, and the 32000-wide head. Its backward runs only when t >= 1 (segment 0 sees no memory, so nothing in
/// its loss needs a gradient); layer 0's token Q/K/V projections have no backward (frozen input).</item>
/// <item>Encoder, per segment: l + n rows through layers 0..L-2 (the last layer only yields its normed input), no head;
/// attention pairs under the step-expansion mask. Its backward (once per flushed graph) reaches every row, since the
/// memory embedding is trainable.</item>
/// <item>A step of T segments needs T decoder forwards, T-1 decoder backwards, T-1 encoder forwards (the last segment's
/// memory is read by nothing) and one encoder backward per flushed graph (the estimator's counter).</item>
/// </list>
/// </remarks>
internal sealed class UioStepFlops(LlamaConfig model, UioConfig uio)
{
    private int D => model.Dim;
    private int Kv => model.KvDim;
    private int H => model.HiddenDim;

    private static double Linear(double m, double k, double n) => 2 * m * k * n;

    private static double LoraExtra(double m, double k, double n, double r) => 2 * m * r * (k + n);

    /// <summary>Frozen projections of one block for m rows (Q, K, V, O, gate, up, down).</summary>
    private double Block(double m) => 2 * Linear(m, D, D) + 2 * Linear(m, D, Kv) + 2 * Linear(m, D, H) + Linear(m, H, D);

    /// <summary>Visible query-key pairs of decoder segment t per head: every memory row plus causal tokens.</summary>
    public double DecoderPairs(int t)
    {
        double q = uio.SegmentLength, m = (double)t * uio.MemoryTokens;
        return q * m + q * (q + 1) / 2;
    }

    /// <summary>Visible pairs of one encoder segment per head: causal ordinary tokens; memory token i sees (i+1)c tokens and itself.</summary>
    public double EncoderPairs()
    {
        double l = uio.SegmentLength, pairs = l * (l + 1) / 2;
        for (int i = 0; i < uio.MemoryTokens; i++) pairs += (i + 1) * uio.Stride + 1;
        return pairs;
    }

    public double DecoderForward(int t)
    {
        double q = uio.SegmentLength, m = (double)t * uio.MemoryTokens, r = uio.TransferRank;
        double transfer = m > 0 ? 2 * Linear(m, D, Kv) + 2 * LoraExtra(m, D, Kv, r) : 0;
        return model.Layers * (Block(q) + transfer + 4.0 * D * DecoderPairs(t)) + Linear(q, D, model.VocabSize);
    }

    public double DecoderBackward(int t)
    {
        if (t == 0) return 0;
        double q = uio.SegmentLength, m = (double)t * uio.MemoryTokens, r = uio.TransferRank;
        double transfer = 2 * Linear(m, D, Kv) + 4 * LoraExtra(m, D, Kv, r);
        double qkv = Linear(q, D, D) + 2 * Linear(q, D, Kv);
        double total = Linear(q, D, model.VocabSize);   // head: dHidden only
        for (int layer = 0; layer < model.Layers; layer++)
        {
            total += Block(q) - (layer == 0 ? qkv : 0) + transfer;
            total += (layer == 0 ? 6.0 : 8.0) * D * DecoderPairs(t);
        }
        return total;
    }

    private double EncoderRows => uio.SegmentLength + uio.MemoryTokens;

    public double EncoderForward()
    {
        double e = EncoderRows, r = uio.EncoderRank;
        return (model.Layers - 1) * (Block(e) + LoraExtra(e, D, D, r) + LoraExtra(e, D, Kv, r) + 4.0 * D * EncoderPairs());
    }

    public double EncoderBackward()
    {
        double e = EncoderRows, r = uio.EncoderRank;
        return (model.Layers - 1) * (Block(e) + 2 * LoraExtra(e, D, D, r) + 2 * LoraExtra(e, D, Kv, r) + 8.0 * D * EncoderPairs());
    }

    /// <summary>One document of T segments with the given numbers of encoder forwards and backwards.</summary>
    public double Step(int segments, long encoderForwards, long encoderBackwards)
    {
        double total = encoderForwards * EncoderForward() + encoderBackwards * EncoderBackward();
        for (int t = 0; t < segments; t++) total += DecoderForward(t) + DecoderBackward(t);
        return total;
    }
}
