// Elementwise ops; outputs may alias inputs exactly (each element is read before it is written by one thread).
#include "uio_common.cuh"

extern "C" __global__ void ew_add(const float* a, const float* b, float* y, i64 n)
{
    UIO_GRID_LOOP(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void ew_mul(const float* a, const float* b, float* y, i64 n)
{
    UIO_GRID_LOOP(i, n) y[i] = a[i] * b[i];
}

extern "C" __global__ void ew_scale(const float* x, float s, float* y, i64 n)
{
    UIO_GRID_LOOP(i, n) y[i] = s * x[i];
}

// y += alpha * x
extern "C" __global__ void ew_axpy(float alpha, const float* x, float* y, i64 n)
{
    UIO_GRID_LOOP(i, n) y[i] = fmaf(alpha, x[i], y[i]);
}
