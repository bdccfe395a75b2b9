namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    public void MatMul(Tensor a, Tensor b, Tensor c, bool transA = false, bool transB = false, float alpha = 1f, float beta = 0f) => throw new NotSupportedException("PENDING");
    public void MatMulStrided(Tensor a, MatrixLayout la, bool transA, Tensor b, MatrixLayout lb, bool transB, Tensor c, MatrixLayout lc, int m, int n, int k, int batch = 1, float alpha = 1f, float beta = 0f) => throw new NotSupportedException("PENDING");
    public void MatMulBackward(Tensor a, Tensor b, Tensor dc, Tensor? da, Tensor? db, bool transA = false, bool transB = false) => throw new NotSupportedException("PENDING");
}
