// Strided-batched fp32 GEMM: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b], row-major, op = transpose when asked.
// A block of 256 threads (16 x 16) computes a BM x BN tile of C, each thread TM x TN outputs split in two halves
// (rows ty*TM/2 + i and BM/2 + ty*TM/2 + i, likewise columns) so a warp's shared-memory reads are contiguous.
// K advances 8 at a time through double-buffered shared tiles; the next tile's global loads are issued before
// the current tile's arithmetic. Edges (M, N, K not multiples of the tile) load zeros and skip stores.
// With beta == 0, C is written without being read (it may hold garbage or NaN).
#include "uio_common.cuh"

#define GEMM_BK 8

template <int BM, int BN, int TM, int TN, bool TA, bool TB>
__device__ __forceinline__ void gemm_tile(const float* __restrict__ A, int lda, i64 strideA,
                                          const float* __restrict__ B, int ldb, i64 strideB,
                                          float* __restrict__ C, int ldc, i64 strideC,
                                          int m, int n, int k, float alpha, float beta)
{
    constexpr int A_PER = BM * GEMM_BK / 256;   // elements of the A tile each thread loads
    constexpr int B_PER = BN * GEMM_BK / 256;
    __shared__ float As[2][GEMM_BK][BM];
    __shared__ float Bs[2][GEMM_BK][BN];

    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    const int batch = blockIdx.z;
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    float ra[A_PER], rb[B_PER];
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;

    // Global -> registers for the tile starting at k0.
    auto load = [&](int k0) {
#pragma unroll
        for (int q = 0; q < A_PER; q++)
        {
            int e = t + 256 * q, kk, mm;
            if (TA) { mm = e % BM; kk = e / BM; }    // A stored [K, M]: contiguous along m
            else { kk = e % GEMM_BK; mm = e / GEMM_BK; }
            int gr = row0 + mm, gk = k0 + kk;
            ra[q] = (gr < m && gk < k) ? (TA ? A[(i64)gk * lda + gr] : A[(i64)gr * lda + gk]) : 0.0f;
        }
#pragma unroll
        for (int q = 0; q < B_PER; q++)
        {
            int e = t + 256 * q, kk, nn;
            if (TB) { kk = e % GEMM_BK; nn = e / GEMM_BK; }   // B stored [N, K]
            else { nn = e % BN; kk = e / BN; }
            int gc = col0 + nn, gk = k0 + kk;
            rb[q] = (gc < n && gk < k) ? (TB ? B[(i64)gc * ldb + gk] : B[(i64)gk * ldb + gc]) : 0.0f;
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int q = 0; q < A_PER; q++)
        {
            int e = t + 256 * q, kk, mm;
            if (TA) { mm = e % BM; kk = e / BM; }
            else { kk = e % GEMM_BK; mm = e / GEMM_BK; }
            As[buf][kk][mm] = ra[q];
        }
#pragma unroll
        for (int q = 0; q < B_PER; q++)
        {
            int e = t + 256 * q, kk, nn;
            if (TB) { kk = e % GEMM_BK; nn = e / GEMM_BK; }
            else { nn = e % BN; kk = e / BN; }
            Bs[buf][kk][nn] = rb[q];
        }
    };

    int tiles = (k + GEMM_BK - 1) / GEMM_BK;
    if (tiles > 0)
    {
        load(0);
        store(0);
    }
    __syncthreads();
    for (int tile = 0; tile < tiles; tile++)
    {
        int buf = tile & 1;
        if (tile + 1 < tiles) load((tile + 1) * GEMM_BK);
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk++)
        {
            float a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM / 2; i++)
            {
                a[i] = As[buf][kk][ty * (TM / 2) + i];
                a[TM / 2 + i] = As[buf][kk][BM / 2 + ty * (TM / 2) + i];
            }
#pragma unroll
            for (int j = 0; j < TN / 2; j++)
            {
                b[j] = Bs[buf][kk][tx * (TN / 2) + j];
                b[TN / 2 + j] = Bs[buf][kk][BN / 2 + tx * (TN / 2) + j];
            }
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        if (tile + 1 < tiles) store(buf ^ 1);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; i++)
    {
        int r = row0 + (i < TM / 2 ? ty * (TM / 2) + i : BM / 2 + ty * (TM / 2) + (i - TM / 2));
        if (r >= m) continue;
#pragma unroll
        for (int j = 0; j < TN; j++)
        {
            int c = col0 + (j < TN / 2 ? tx * (TN / 2) + j : BN / 2 + tx * (TN / 2) + (j - TN / 2));
            if (c >= n) continue;
            float* p = C + (i64)r * ldc + c;
            float v = alpha * acc[i][j];
            *p = beta == 0.0f ? v : fmaf(beta, *p, v);
        }
    }
}

#define GEMM_KERNEL(NAME, BM, BN, TM, TN, TA, TB)                                                               \
    extern "C" __global__ void __launch_bounds__(256) NAME(const float* A, int lda, i64 strideA,                \
        const float* B, int ldb, i64 strideB, float* C, int ldc, i64 strideC, int m, int n, int k,             \
        float alpha, float beta)                                                                                \
    {                                                                                                           \
        gemm_tile<BM, BN, TM, TN, TA, TB>(A, lda, strideA, B, ldb, strideB, C, ldc, strideC, m, n, k, alpha, beta); \
    }

// Large tiles (128 x 128, 8 x 8 per thread) for big products; medium (64 x 64) and small (32 x 32) ones keep
// every SM busy when M x N is small (decode, per-head blocks, a 15M-parameter model's projections).
GEMM_KERNEL(gemm_l_nn, 128, 128, 8, 8, false, false)
GEMM_KERNEL(gemm_l_nt, 128, 128, 8, 8, false, true)
GEMM_KERNEL(gemm_l_tn, 128, 128, 8, 8, true, false)
GEMM_KERNEL(gemm_l_tt, 128, 128, 8, 8, true, true)
GEMM_KERNEL(gemm_m_nn, 64, 64, 4, 4, false, false)
GEMM_KERNEL(gemm_m_nt, 64, 64, 4, 4, false, true)
GEMM_KERNEL(gemm_m_tn, 64, 64, 4, 4, true, false)
GEMM_KERNEL(gemm_m_tt, 64, 64, 4, 4, true, true)
GEMM_KERNEL(gemm_s_nn, 32, 32, 2, 2, false, false)
GEMM_KERNEL(gemm_s_nt, 32, 32, 2, 2, false, true)
GEMM_KERNEL(gemm_s_tn, 32, 32, 2, 2, true, false)
GEMM_KERNEL(gemm_s_tt, 32, 32, 2, 2, true, true)
