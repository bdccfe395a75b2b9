// RmsNorm (forward, dx, dWeight) and SwiGLU (forward, backward).
#include "uio_common.cuh"

// One block per row: rstd = 1 / sqrt(mean(x^2) + eps) (the last step in double), y = x * rstd * w.
extern "C" __global__ void rmsnorm_fwd(const float* x, const float* __restrict__ w, float* y, float* __restrict__ rstd, int rows, int d, float eps)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x)
    {
        const float* xr = x + (i64)row * d;
        float* yr = y + (i64)row * d;
        float ss = 0.0f;
        for (int i = threadIdx.x; i < d; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
        ss = block_sum(ss, scratch);
        float r = (float)(1.0 / sqrt((double)ss / d + (double)eps));
        if (threadIdx.x == 0) rstd[row] = r;
        for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = xr[i] * r * w[i];
        __syncthreads();
    }
}

// dx += r w dy - x r^3 / d * sum(dy w x); one block per row.
extern "C" __global__ void rmsnorm_bwd_dx(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ rstd,
    const float* __restrict__ dy, float* __restrict__ dx, int rows, int d)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x)
    {
        const float* xr = x + (i64)row * d;
        const float* dyr = dy + (i64)row * d;
        float* dxr = dx + (i64)row * d;
        float r = rstd[row];
        float dot = 0.0f;
        for (int i = threadIdx.x; i < d; i += blockDim.x) dot = fmaf(dyr[i] * w[i], xr[i], dot);
        dot = block_sum(dot, scratch);
        float coef = (float)(-(double)dot * r * r * r / d);
        for (int i = threadIdx.x; i < d; i += blockDim.x) dxr[i] += r * w[i] * dyr[i] + coef * xr[i];
        __syncthreads();
    }
}

// dw += sum over rows of dy x r. Block (32 columns x 8 row lanes) over a chunk of rows; one atomic per column per block.
extern "C" __global__ void rmsnorm_bwd_dw(const float* __restrict__ x, const float* __restrict__ rstd, const float* __restrict__ dy,
    float* __restrict__ dw, int rows, int d, int rows_per_block)
{
    __shared__ float part[8][33];
    int col = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows_per_block, r1 = min(rows, r0 + rows_per_block);
    float s = 0.0f;
    if (col < d)
        for (int row = r0 + threadIdx.y; row < r1; row += 8)
            s = fmaf(dy[(i64)row * d + col] * x[(i64)row * d + col], rstd[row], s);
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < d)
    {
        float total = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) total += part[j][threadIdx.x];
        atomicAdd(dw + col, total);
    }
}

__device__ __forceinline__ float uio_sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// h = silu(gate) * up; h may alias gate or up.
extern "C" __global__ void swiglu_fwd(const float* gate, const float* up, float* h, i64 n)
{
    UIO_GRID_LOOP(i, n)
    {
        float g = gate[i];
        h[i] = g * uio_sigmoid(g) * up[i];
    }
}

// dGate += dh * up * s (1 + g (1 - s)), dUp += dh * g s, s = sigmoid(g); either may be null.
extern "C" __global__ void swiglu_bwd(const float* __restrict__ gate, const float* __restrict__ up, const float* __restrict__ dh,
    float* __restrict__ dgate, float* __restrict__ dup, i64 n)
{
    UIO_GRID_LOOP(i, n)
    {
        float g = gate[i], s = uio_sigmoid(g), d = dh[i];
        if (dgate != nullptr) dgate[i] += d * up[i] * s * (1.0f + g * (1.0f - s));
        if (dup != nullptr) dup[i] += d * g * s;
    }
}
