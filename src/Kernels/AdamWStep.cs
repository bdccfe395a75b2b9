namespace UioLlm.Kernels;

/// <summary>
/// One AdamW update (decoupled weight decay): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
/// p -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd * p), with g = GradScale * grad.
/// </summary>
public readonly record struct AdamWStep(
    float LearningRate,
    int Step,
    float Beta1 = 0.9f,
    float Beta2 = 0.95f,
    float Epsilon = 1e-8f,
    float WeightDecay = 0f,
    float GradScale = 1f);

/// <summary>
/// A strided batch of matrices inside one tensor (BLAS-style): matrix b starts at
/// Offset + b * BatchStride, and row r of it at + r * LeadingDim. BatchStride 0 broadcasts one matrix.
/// </summary>
public readonly record struct MatrixLayout(int Offset, int LeadingDim, int BatchStride = 0);
