namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void Rope(Tensor x, Tensor y, ReadOnlySpan<int> positions, RopeTable table) => throw new NotSupportedException("PENDING");
    public void RopeBackward(Tensor dy, Tensor dx, ReadOnlySpan<int> positions, RopeTable table) => throw new NotSupportedException("PENDING");
}
