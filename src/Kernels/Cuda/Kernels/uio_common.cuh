// Shared helpers for the UioLlm CUDA kernels. Header-free: NVRTC provides the built-in math functions and
// intrinsics; nothing from the CUDA toolkit's include folder is used, so any NVRTC (11.2+) can compile these.
#pragma once

#define UIO_FULL_MASK 0xffffffffu

typedef long long i64;

__device__ __forceinline__ float uio_neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(UIO_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(UIO_FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(UIO_FULL_MASK, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds at least 32 floats; the call begins and ends with a barrier so it can be repeated.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    return v;
}

__device__ __forceinline__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : uio_neg_inf();
    v = warp_max(v);
    return v;
}

__device__ __forceinline__ double block_sum_d(double v, double* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0;
    v = warp_sum_d(v);
    return v;
}

// Grid-stride loop over [0, n).
#define UIO_GRID_LOOP(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)gridDim.x * blockDim.x)

// ------------------------------------------------------------------------------------------------------
// Attention masks: the device form of AttentionMask.VisibleIntervals (src/Kernels/AttentionMask.cs), which
// is the definition the CPU kernels use. A query sees the keys inside at most three sorted, disjoint,
// half-open intervals.
struct UioMask
{
    int prefix;
    int causal;
    int window;
    int sinks;
    int memory_count;
    int step_stride;
    int group_size;
    int shift_upper;
};

struct UioIntervals
{
    int count;
    int lo[3];
    int hi[3];
};

// Indexed with constants only (a runtime index would put the struct in local memory).
__device__ __forceinline__ int uio_hi(const UioIntervals& iv, int r) { return r == 0 ? iv.hi[0] : r == 1 ? iv.hi[1] : iv.hi[2]; }

__device__ __forceinline__ void uio_set(UioIntervals& iv, int r, int lo, int hi)
{
    if (r == 0) { iv.lo[0] = lo; iv.hi[0] = hi; }
    else if (r == 1) { iv.lo[1] = lo; iv.hi[1] = hi; }
    else { iv.lo[2] = lo; iv.hi[2] = hi; }
}

// Add [start, end) after the intervals already there, merging when it touches the last one.
__device__ __forceinline__ void uio_append(UioIntervals& iv, int start, int end)
{
    if (end <= start) return;
    if (iv.count > 0)
    {
        int last = iv.count - 1, lastHi = uio_hi(iv, last);
        if (start <= lastHi)
        {
            int lastLo = last == 0 ? iv.lo[0] : last == 1 ? iv.lo[1] : iv.lo[2];
            uio_set(iv, last, lastLo, max(lastHi, end));
            return;
        }
    }
    uio_set(iv, iv.count, start, end);
    iv.count++;
}

__device__ __forceinline__ UioIntervals uio_visible(const UioMask& m, int head, int heads, int i, int tq, int tk)
{
    UioIntervals iv;
    iv.count = 0;
    iv.lo[0] = iv.lo[1] = iv.lo[2] = 0;
    iv.hi[0] = iv.hi[1] = iv.hi[2] = 0;
    int p = m.prefix;
    uio_append(iv, 0, min(p, tk));
    bool positional = m.causal || m.window > 0 || m.memory_count > 0 || m.group_size > 0;
    if (!positional)
    {
        uio_append(iv, p, tk);
        return iv;
    }
    int rq = tk - tq + i - p;
    int n = tk - p;
    if (m.memory_count > 0)
    {
        int l = tq - m.memory_count;
        if (rq < l)
        {
            uio_append(iv, p, p + rq + 1);
        }
        else
        {
            uio_append(iv, p, p + min((rq - l + 1) * m.step_stride, l));
            uio_append(iv, p + rq, p + rq + 1);
        }
        return iv;
    }
    int lo = 0, hi = n;
    if (m.causal) hi = min(hi, rq + 1);
    if (m.group_size > 0)
    {
        int shift = m.shift_upper && head >= heads / 2 ? m.group_size / 2 : 0;
        int start = (rq + shift) / m.group_size * m.group_size - shift;
        lo = max(lo, start);
        hi = min(hi, start + m.group_size);
    }
    if (m.window > 0)
    {
        uio_append(iv, p + lo, p + min(m.sinks, hi));
        uio_append(iv, p + max(lo, rq - m.window + 1), p + hi);
    }
    else
    {
        uio_append(iv, p + lo, p + hi);
    }
    return iv;
}

__device__ __forceinline__ bool uio_in(const UioIntervals& iv, int j)
{
    bool v = false;
#pragma unroll
    for (int r = 0; r < 3; r++) v |= r < iv.count && j >= iv.lo[r] && j < iv.hi[r];
    return v;
}

// Does the query see any key of [k0, k1)? Does it see all of them?
__device__ __forceinline__ bool uio_any(const UioIntervals& iv, int k0, int k1)
{
    bool v = false;
#pragma unroll
    for (int r = 0; r < 3; r++) v |= r < iv.count && iv.lo[r] < k1 && iv.hi[r] > k0;
    return v;
}

__device__ __forceinline__ bool uio_all(const UioIntervals& iv, int k0, int k1)
{
    bool v = false;
#pragma unroll
    for (int r = 0; r < 3; r++) v |= r < iv.count && iv.lo[r] <= k0 && iv.hi[r] >= k1;
    return v;
}
