namespace UioLlm.Kernels;

/// <summary>Every op of <see cref="IKernels"/>, for <see cref="IKernels.Supports"/> and the per-op kit.</summary>
public enum KernelOp
{
    MatMul, MatMulStrided, MatMulBackward, LoraMatMul, LoraMatMulBackward, Rope, RopeBackward, Attention, AttentionBackward,
    RmsNorm, RmsNormBackward, SwiGlu, SwiGluBackward, Softcap, SoftcapBackward, Embedding, EmbeddingBackward, CrossEntropy, CrossEntropyBackward,
    CrossEntropyWithGradient, AdamW, GlobalNorm, Add, Multiply, Scale, Axpy, Copy, Fill,
}

/// <summary>
/// Which shapes each backend runs. A backend answers through <see cref="IKernels.Supports"/>; a caller that may meet
/// an unsupported shape asks first and routes the op to another backend (explicitly, with a copy) instead of catching
/// an exception. A new fused kernel can so land on one backend first: the others answer false until they have it.
/// </summary>
public static class KernelSupport
{
    /// <summary>
    /// The ILGPU backend: everything except attention whose head dimension does not fit its shared-memory tiles
    /// (<paramref name="shape"/> is q's shape for Attention and AttentionBackward: D is its last axis).
    /// </summary>
    public static bool Ilgpu(KernelOp op, ReadOnlySpan<int> shape) => op switch
    {
        KernelOp.Attention or KernelOp.AttentionBackward => shape.Length > 0 && Gpu.IlgpuKernels.AttentionBlock(shape[^1]) > 0,
        _ => true,
    };

    /// <summary>The accelerator among <paramref name="candidates"/> (in order of preference) whose kernels support the op on this shape.</summary>
    public static Accelerator Choose(KernelOp op, ReadOnlySpan<int> shape, params Accelerator[] candidates)
    {
        foreach (var a in candidates)
            if (a.Kernels.Supports(op, shape)) return a;
        throw new ArgumentException($"{op}: no backend among {string.Join(", ", candidates.Select(c => c.Description))} supports shape {Tensor.FormatShape(shape)}", nameof(shape));
    }
}
