namespace UioLlm.Kernels;

/// <summary>
/// The single op contract every backend implements (CPU now, CUDA through the same API).
/// </summary>
/// <remarks>
/// Conventions:
/// <list type="bullet">
/// <item>Tensors are float32, contiguous row-major. Integer inputs (token ids, targets, positions) are host spans.</item>
/// <item>Forward ops overwrite their outputs. Every backward op ACCUMULATES (+=) into its gradient outputs,
/// so callers zero gradients once and several consumers may add into the same buffer. Gradient outputs
/// passed as null are skipped. A gradient output must not alias an input of the same call.</item>
/// <item>Linear weights use the PyTorch / Hugging Face layout [out, in]: y = x W^T.</item>
/// <item>Shape or argument mistakes throw ArgumentException naming the op, the tensor and the shapes.</item>
/// </list>
/// </remarks>
public interface IKernels
{
    /// <summary>
    /// Whether this backend runs <paramref name="op"/> on operands of this shape (the op's first tensor, e.g. q for
    /// attention). Ops it does not support throw; callers that may meet such shapes ask first and fall back explicitly
    /// (<see cref="KernelSupport.Choose"/>). The CPU backend supports everything.
    /// </summary>
    bool Supports(KernelOp op, ReadOnlySpan<int> shape) => true;

    // ---------------------------------------------------------------- matrix multiply

    /// <summary>
    /// c = alpha * op(a) op(b) + beta * c, op = transpose when asked. Rank 2: a [M,K] (or [K,M]),
    /// b [K,N] (or [N,K]), c [M,N]. Rank 3 batches over the first axis; a rank-2 operand is broadcast.
    /// </summary>
    void MatMul(Tensor a, Tensor b, Tensor c, bool transA = false, bool transB = false, float alpha = 1f, float beta = 0f);

    /// <summary>
    /// The strided-batched GEMM behind <see cref="MatMul"/>: <paramref name="batch"/> products of op(A) [m,k]
    /// by op(B) [k,n] into C [m,n], each matrix addressed by its <see cref="MatrixLayout"/> inside its tensor.
    /// </summary>
    void MatMulStrided(Tensor a, MatrixLayout la, bool transA, Tensor b, MatrixLayout lb, bool transB,
        Tensor c, MatrixLayout lc, int m, int n, int k, int batch = 1, float alpha = 1f, float beta = 0f);

    /// <summary>Gradients of c = op(a) op(b): da += dC op(b)^T (as op(a) is laid out), db likewise.</summary>
    void MatMulBackward(Tensor a, Tensor b, Tensor dc, Tensor? da, Tensor? db, bool transA = false, bool transB = false);

    // ---------------------------------------------------------------- LoRA

    /// <summary>
    /// Fused LoRA projection: y = x W^T + scale * (x A^T) B^T with x [T,in], W [out,in] (frozen),
    /// A [r,in], B [out,r], y [T,out]; saves xa = x A^T [T,r] for the backward.
    /// </summary>
    void LoraMatMul(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor xa);

    /// <summary>Backward of <see cref="LoraMatMul"/>: dx, dA, dB (W is frozen: no dW).</summary>
    void LoraMatMulBackward(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor xa, Tensor dy,
        Tensor? dx, Tensor? dA, Tensor? dB);

    // ---------------------------------------------------------------- positions

    /// <summary>
    /// Rotary embedding: y = rotate(x, positions[t] * table.InverseFrequency) * table.AttentionFactor.
    /// x and y [T, H, D] (or [B, T, H, D] with positions of length T or B*T); y may alias x.
    /// </summary>
    void Rope(Tensor x, Tensor y, ReadOnlySpan<int> positions, RopeTable table);

    /// <summary>dx += rotate^T(dy): the transpose of <see cref="Rope"/>.</summary>
    void RopeBackward(Tensor dy, Tensor dx, ReadOnlySpan<int> positions, RopeTable table);

    // ---------------------------------------------------------------- attention

    /// <summary>
    /// Flash-style attention with grouped-query heads: q [Tq,Hq,D], k and v [Tk,Hkv,D], o [Tq,Hq,D],
    /// lse [Hq,Tq] (natural-log sum of exp of the scaled scores, saved for the backward); a leading batch
    /// axis is allowed on all of them. Query head h reads kv head h / (Hq/Hkv). Scale defaults to 1/sqrt(D).
    /// Never materialises the Tq x Tk score matrix. A query that sees no key gets o = 0 and lse = -inf.
    /// </summary>
    void Attention(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionMask mask, float? scale = null);

    /// <summary>Backward of <see cref="Attention"/> from the saved lse: dq, dk, dv accumulate.</summary>
    void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, AttentionMask mask,
        Tensor? dq, Tensor? dk, Tensor? dv, float? scale = null);

    // ---------------------------------------------------------------- normalisation and activations

    /// <summary>y = x / sqrt(mean(x^2) + eps) * weight over the last axis; x, y [.., d], weight [d]; saves rstd [rows].</summary>
    void RmsNorm(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps);

    void RmsNormBackward(Tensor x, Tensor weight, Tensor rstd, Tensor dy, Tensor? dx, Tensor? dWeight);

    /// <summary>h = silu(gate) * up, elementwise; all the same shape.</summary>
    void SwiGlu(Tensor gate, Tensor up, Tensor h);

    void SwiGluBackward(Tensor gate, Tensor up, Tensor dh, Tensor? dGate, Tensor? dUp);

    /// <summary>
    /// Soft-capping: y = cap * tanh(x / cap) elementwise (Gemma 2 caps attention and final logits this way); y may alias x.
    /// </summary>
    void Softcap(Tensor x, float cap, Tensor y);

    /// <summary>dx += dy * (1 - tanh(x / cap)^2): the derivative of <see cref="Softcap"/>.</summary>
    void SoftcapBackward(Tensor x, float cap, Tensor dy, Tensor dx);

    // ---------------------------------------------------------------- embedding and loss

    /// <summary>output[t] = table[ids[t]]: table [V,d], output [T,d].</summary>
    void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output);

    /// <summary>dTable[ids[t]] += dOutput[t] (scatter-add; repeated ids add up).</summary>
    void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dOutput, Tensor dTable);

    /// <summary>
    /// Mean next-token cross-entropy of logits [T,V] against targets (rows whose target equals
    /// <paramref name="ignoreIndex"/> are skipped), fused with log-softmax; saves lse [T]. Returns 0 when no row is valid.
    /// </summary>
    float CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, int ignoreIndex = -100);

    /// <summary>dLogits += dLoss * (softmax(logits) - onehot(target)) / validCount on valid rows.</summary>
    void CrossEntropyBackward(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float dLoss = 1f, int ignoreIndex = -100);

    /// <summary>
    /// The loss and its gradient in one pass over each row, for a loss that ends the graph: returns what
    /// <see cref="CrossEntropy"/> returns (and saves lse), and WRITES (does not accumulate)
    /// dLogits = scale * (softmax(logits) - onehot(target)) / validCount on valid rows and 0 on ignored rows.
    /// dLogits may be logits itself: the logits are then replaced by their gradient (no second buffer, one
    /// read and one write of the logits).
    /// </summary>
    float CrossEntropyWithGradient(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float scale = 1f, int ignoreIndex = -100);

    // ---------------------------------------------------------------- optimizer and reductions

    /// <summary>One in-place AdamW step on param with moments m and v (all the same shape).</summary>
    void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step);

    /// <summary>sqrt of the sum of squares of every element of every tensor (accumulated in double).</summary>
    float GlobalNorm(IReadOnlyList<Tensor> tensors);

    // ---------------------------------------------------------------- elementwise

    /// <summary>y = a + b (y may alias a or b).</summary>
    void Add(Tensor a, Tensor b, Tensor y);

    /// <summary>y = a * b elementwise (y may alias a or b).</summary>
    void Multiply(Tensor a, Tensor b, Tensor y);

    /// <summary>y = s * x (y may alias x).</summary>
    void Scale(Tensor x, float s, Tensor y);

    /// <summary>y += alpha * x.</summary>
    void Axpy(float alpha, Tensor x, Tensor y);

    /// <summary>dst = src (same element count).</summary>
    void Copy(Tensor src, Tensor dst);

    /// <summary>Every element of t = value.</summary>
    void Fill(Tensor t, float value);
}
