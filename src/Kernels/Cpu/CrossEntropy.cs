namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public float CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, int ignoreIndex = -100) => throw new NotSupportedException("PENDING");
    public void CrossEntropyBackward(Tensor logits, ReadOnlySpan<int> targets, Tensor lse, Tensor dLogits, float dLoss = 1f, int ignoreIndex = -100) => throw new NotSupportedException("PENDING");
}
