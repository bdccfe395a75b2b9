namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void RmsNorm(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps) => throw new NotSupportedException("PENDING");
    public void RmsNormBackward(Tensor x, Tensor weight, Tensor rstd, Tensor dy, Tensor? dx, Tensor? dWeight) => throw new NotSupportedException("PENDING");
}
