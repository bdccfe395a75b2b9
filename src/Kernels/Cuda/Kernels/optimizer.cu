// AdamW (decoupled weight decay) and the per-block sums of squares behind GlobalNorm.
#include "uio_common.cuh"

// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p = p decay - lr (m c1) / (sqrt(v c2) + eps), g = grad_scale * grad.
// The bias corrections c1, c2 and decay = 1 - lr wd are folded on the host (in double), as on the CPU.
extern "C" __global__ void adamw(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v, i64 n,
    float beta1, float beta2, float one_minus_beta1, float one_minus_beta2, float c1, float c2, float lr, float eps, float decay, float grad_scale)
{
    UIO_GRID_LOOP(i, n)
    {
        float g = grad[i] * grad_scale;
        float mi = fmaf(beta1, m[i], one_minus_beta1 * g);
        float vi = fmaf(beta2, v[i], one_minus_beta2 * (g * g));
        m[i] = mi;
        v[i] = vi;
        float update = (mi * c1) / (sqrtf(vi * c2) + eps);
        p[i] = fmaf(-lr, update, p[i] * decay);
    }
}

// partial[blockIdx.x] = sum of x[i]^2 over the block's grid-stride share, in double (summed on the host in order).
extern "C" __global__ void sum_squares(const float* __restrict__ x, i64 n, double* __restrict__ partial)
{
    __shared__ double scratch[32];
    double s = 0.0;
    UIO_GRID_LOOP(i, n)
    {
        double v = x[i];
        s += v * v;
    }
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
