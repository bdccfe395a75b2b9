namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output) => throw new NotSupportedException("PENDING");
    public void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dOutput, Tensor dTable) => throw new NotSupportedException("PENDING");
}
