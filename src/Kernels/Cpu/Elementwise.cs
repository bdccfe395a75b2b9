namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void Add(Tensor a, Tensor b, Tensor y) => throw new NotSupportedException("PENDING");
    public void Multiply(Tensor a, Tensor b, Tensor y) => throw new NotSupportedException("PENDING");
    public void Scale(Tensor x, float s, Tensor y) => throw new NotSupportedException("PENDING");
    public void Axpy(float alpha, Tensor x, Tensor y) => throw new NotSupportedException("PENDING");
    public void Copy(Tensor src, Tensor dst) => throw new NotSupportedException("PENDING");
    public void Fill(Tensor t, float value) => throw new NotSupportedException("PENDING");
}
