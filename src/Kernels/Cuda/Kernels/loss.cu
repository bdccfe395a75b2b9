// Embedding lookup and its scatter-add backward; fused log-softmax cross-entropy and its backward.
#include "uio_common.cuh"

// out[t, c] = table[ids[t], c]
extern "C" __global__ void embedding_fwd(const float* __restrict__ table, const int* __restrict__ ids, float* __restrict__ out, int count, int d)
{
    UIO_GRID_LOOP(e, (i64)count * d)
    {
        int t = (int)(e / d), c = (int)(e - (i64)t * d);
        out[e] = table[(i64)ids[t] * d + c];
    }
}

// dTable[ids[t], c] += dOut[t, c]; repeated ids add up (atomics).
extern "C" __global__ void embedding_bwd(const int* __restrict__ ids, const float* __restrict__ dout, float* __restrict__ dtable, int count, int d)
{
    UIO_GRID_LOOP(e, (i64)count * d)
    {
        int t = (int)(e / d), c = (int)(e - (i64)t * d);
        atomicAdd(dtable + (i64)ids[t] * d + c, dout[e]);
    }
}

// One block per row: lse = log(sum exp(x)), loss[row] = lse - x[target] (0 for an ignored row).
extern "C" __global__ void cross_entropy_fwd(const float* __restrict__ logits, const int* __restrict__ targets, float* __restrict__ lse,
    float* __restrict__ loss, int rows, int vocab, int ignore_index)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x)
    {
        const float* x = logits + (i64)row * vocab;
        float mx = uio_neg_inf();
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, x[j]);
        mx = block_max(mx, scratch);
        float s = 0.0f;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += expf(x[j] - mx);
        s = block_sum(s, scratch);
        if (threadIdx.x == 0)
        {
            float l = mx + logf(s);
            lse[row] = l;
            int target = targets[row];
            loss[row] = target == ignore_index ? 0.0f : l - x[target];
        }
        __syncthreads();
    }
}

// dLogits[row, j] += scale * (exp(x - lse) - [j == target]) on rows whose target is not ignored.
extern "C" __global__ void cross_entropy_bwd(const float* __restrict__ logits, const int* __restrict__ targets, const float* __restrict__ lse,
    float* __restrict__ dlogits, int rows, int vocab, int ignore_index, float scale)
{
    UIO_GRID_LOOP(e, (i64)rows * vocab)
    {
        int row = (int)(e / vocab), j = (int)(e - (i64)row * vocab);
        int target = targets[row];
        if (target == ignore_index) continue;
        float p = expf(logits[e] - lse[row]);
        dlogits[e] += scale * (p - (j == target ? 1.0f : 0.0f));
    }
}

// The loss and its gradient in one pass per row (one block per row), for a loss that ends the graph:
// lse and loss[row] as cross_entropy_fwd, then dlogits[row, j] = scale * (exp(x - lse) - [j == target]) WRITTEN
// (0 on an ignored row). dlogits may be logits itself: every read of the row happens before the first write.
extern "C" __global__ void cross_entropy_fused(const float* logits, const int* __restrict__ targets, float* __restrict__ lse,
    float* __restrict__ loss, float* dlogits, int rows, int vocab, int ignore_index, float scale)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x)
    {
        const float* x = logits + (i64)row * vocab;
        float* g = dlogits + (i64)row * vocab;
        int target = targets[row];
        float mx = uio_neg_inf();
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, x[j]);
        mx = block_max(mx, scratch);
        float s = 0.0f;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += expf(x[j] - mx);
        s = block_sum(s, scratch);
        float l = mx + logf(s);
        if (threadIdx.x == 0)
        {
            lse[row] = target == ignore_index ? 0.0f : l;
            loss[row] = target == ignore_index ? 0.0f : l - x[target];
        }
        __syncthreads(); // x[target] is read before the row is overwritten
        if (target == ignore_index)
            for (int j = threadIdx.x; j < vocab; j += blockDim.x) g[j] = 0.0f;
        else
            for (int j = threadIdx.x; j < vocab; j += blockDim.x) g[j] = scale * (expf(x[j] - l) - (j == target ? 1.0f : 0.0f));
        __syncthreads();
    }
}
