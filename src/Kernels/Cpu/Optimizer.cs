namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step) => throw new NotSupportedException("PENDING");
    public float GlobalNorm(IReadOnlyList<Tensor> tensors) => throw new NotSupportedException("PENDING");
}
