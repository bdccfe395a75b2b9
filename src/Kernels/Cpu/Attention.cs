namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void Attention(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionMask mask, float? scale = null) => throw new NotSupportedException("PENDING");
    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, AttentionMask mask, Tensor? dq, Tensor? dk, Tensor? dv, float? scale = null) => throw new NotSupportedException("PENDING");
}
