using UioLlm.Kernels;

namespace UioLlm.Training.Optim;

/// <summary>Global-norm gradient clipping.</summary>
public static class GradientClipping
{
    /// <summary>
    /// Computes the global L2 norm of <paramref name="gradients"/> (all tensors as one vector) and, when it
    /// exceeds <paramref name="maxNorm"/>, scales every gradient in place by maxNorm / norm so the global norm
    /// becomes maxNorm. A non-finite norm is left alone (the caller decides what a NaN step means).
    /// </summary>
    /// <returns>The norm before clipping.</returns>
    public static float ClipGlobalNorm(IKernels kernels, IReadOnlyList<Tensor> gradients, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        ArgumentNullException.ThrowIfNull(gradients);
        if (!(maxNorm > 0f))
            throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "clipping: the maximum norm must be positive (use +infinity for no clipping)");
        float norm = kernels.GlobalNorm(gradients);
        if (norm > maxNorm && float.IsFinite(norm))
        {
            float factor = maxNorm / norm;
            foreach (var g in gradients) kernels.Scale(g, factor, g);
        }
        return norm;
    }
}
