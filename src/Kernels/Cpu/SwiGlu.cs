namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void SwiGlu(Tensor gate, Tensor up, Tensor h) => throw new NotSupportedException("PENDING");
    public void SwiGluBackward(Tensor gate, Tensor up, Tensor dh, Tensor? dGate, Tensor? dUp) => throw new NotSupportedException("PENDING");
}
