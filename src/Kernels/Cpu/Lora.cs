namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void LoraMatMul(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor xa) => throw new NotSupportedException("PENDING");
    public void LoraMatMulBackward(Tensor x, Tensor w, Tensor loraA, Tensor loraB, float scale, Tensor xa, Tensor dy, Tensor? dx, Tensor? dA, Tensor? dB) => throw new NotSupportedException("PENDING");
}
