// Flash attention, forward and backward (FlashAttention-2 style), fp32, grouped-query heads, any AttentionMask.
// Layouts (row-major): q, o, dO [B, Tq, Hq, D]; k, v [B, Tk, Hkv, D]; lse, delta [B, Hq, Tq]. Query head h reads
// kv head h / (Hq / Hkv). Scores are kept in the log2 domain (q pre-scaled by scale * log2 e) and lse is
// returned in natural log. The mask is evaluated per query as at most three visible key intervals
// (uio_visible, the device form of AttentionMask.VisibleIntervals): key tiles no query of the block sees are
// skipped, tiles every query sees in full need no per-element test. A query that sees no key gets o = 0, lse = -inf.
// Head dimensions up to DMAX are handled by one instantiation (64, 128, 256); D need not be a multiple of anything.
#include "uio_common.cuh"

#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

#define MASK_PARAMS int m_prefix, int m_causal, int m_window, int m_sinks, int m_memory, int m_stride, int m_group, int m_shift
#define MASK_ARGS m_prefix, m_causal, m_window, m_sinks, m_memory, m_stride, m_group, m_shift

__device__ __forceinline__ UioMask make_mask(MASK_PARAMS)
{
    UioMask m;
    m.prefix = m_prefix; m.causal = m_causal; m.window = m_window; m.sinks = m_sinks;
    m.memory_count = m_memory; m.step_stride = m_stride; m.group_size = m_group; m.shift_upper = m_shift;
    return m;
}

// ---------------------------------------------------------------------------------------------- forward
// Block: 256 threads, 64 queries of one (batch, query head). Thread (rg = t / 16, cl = t % 16) owns query rows
// 4 rg .. 4 rg + 3; for scores it takes keys cl + 16 m of the tile, for the output columns cl + 16 c.
template <int DMAX, int BK>
__device__ __forceinline__ void attn_fwd(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    float* __restrict__ o, float* __restrict__ lse, int Tq, int Tk, int Hq, int Hkv, int D, float scale_log2, const UioMask mask)
{
    constexpr int BQ = 64, LD = DMAX + 1, KPT = BK / 16, CPT = DMAX / 16, LP = BK + 1;
    extern __shared__ float smem[];
    float* Qs = smem;
    float* Ks = Qs + BQ * LD;
    float* Vs = Ks + BK * LD;
    float* Ps = Vs + BK * LD;
    __shared__ UioIntervals s_iv[BQ];

    const int t = threadIdx.x, cl = t & 15, rg = t >> 4;
    const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (Hq / Hkv);
    const i64 qStride = (i64)Hq * D, kStride = (i64)Hkv * D;
    const float* qb = q + ((i64)b * Tq * Hq + h) * D;
    const float* kb = k + ((i64)b * Tk * Hkv + hk) * D;
    const float* vb = v + ((i64)b * Tk * Hkv + hk) * D;

    for (int e = t; e < BQ * D; e += 256)
    {
        int r = e / D, c = e - r * D;
        Qs[r * LD + c] = q0 + r < Tq ? qb[(q0 + r) * qStride + c] * scale_log2 : 0.0f;
    }
    if (t < BQ)
    {
        if (q0 + t < Tq) s_iv[t] = uio_visible(mask, h, Hq, q0 + t, Tq, Tk);
        else s_iv[t].count = 0;
    }

    float m_run[4], l_run[4], acc[4][CPT];
#pragma unroll
    for (int r = 0; r < 4; r++)
    {
        m_run[r] = uio_neg_inf();
        l_run[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < CPT; c++) acc[r][c] = 0.0f;
    }
    __syncthreads();

    for (int k0 = 0; k0 < Tk; k0 += BK)
    {
        int k1 = min(k0 + BK, Tk);
        bool any = false, all = true;
        if (t < BQ && q0 + t < Tq)
        {
            any = uio_any(s_iv[t], k0, k1);
            all = uio_all(s_iv[t], k0, k1);
        }
        if (!__syncthreads_or(any)) continue;
        bool full = __syncthreads_and(all);

        for (int e = t; e < BK * D; e += 256)
        {
            int r = e / D, c = e - r * D;
            bool in = k0 + r < Tk;
            Ks[r * LD + c] = in ? kb[(k0 + r) * kStride + c] : 0.0f;
            Vs[r * LD + c] = in ? vb[(k0 + r) * kStride + c] : 0.0f;
        }
        __syncthreads();

        float s[4][KPT];
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int m = 0; m < KPT; m++) s[r][m] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; d++)
        {
            float qv[4], kv[KPT];
#pragma unroll
            for (int r = 0; r < 4; r++) qv[r] = Qs[(rg * 4 + r) * LD + d];
#pragma unroll
            for (int m = 0; m < KPT; m++) kv[m] = Ks[(cl + 16 * m) * LD + d];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int m = 0; m < KPT; m++) s[r][m] = fmaf(qv[r], kv[m], s[r][m]);
        }

#pragma unroll
        for (int r = 0; r < 4; r++)
        {
            int row = rg * 4 + r;
            float mx = uio_neg_inf();
#pragma unroll
            for (int m = 0; m < KPT; m++)
            {
                int key = k0 + cl + 16 * m;
                if (key >= Tk || (!full && !uio_in(s_iv[row], key))) s[r][m] = uio_neg_inf();
                mx = fmaxf(mx, s[r][m]);
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(UIO_FULL_MASK, mx, off));
            float m_new = fmaxf(m_run[r], mx);
            float alpha = 1.0f, sum = 0.0f;
            if (m_new != uio_neg_inf())
            {
                alpha = exp2f(m_run[r] - m_new);
#pragma unroll
                for (int m = 0; m < KPT; m++)
                {
                    float p = exp2f(s[r][m] - m_new);
                    s[r][m] = p;
                    sum += p;
                }
            }
            else
            {
#pragma unroll
                for (int m = 0; m < KPT; m++) s[r][m] = 0.0f;
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) sum += __shfl_xor_sync(UIO_FULL_MASK, sum, off);
            l_run[r] = l_run[r] * alpha + sum;
            m_run[r] = m_new;
#pragma unroll
            for (int c = 0; c < CPT; c++) acc[r][c] *= alpha;
#pragma unroll
            for (int m = 0; m < KPT; m++) Ps[row * LP + cl + 16 * m] = s[r][m];
        }
        __syncthreads();

        int kn = k1 - k0;
        for (int j = 0; j < kn; j++)
        {
            float p[4];
#pragma unroll
            for (int r = 0; r < 4; r++) p[r] = Ps[(rg * 4 + r) * LP + j];
#pragma unroll
            for (int c = 0; c < CPT; c++)
            {
                float vv = Vs[j * LD + cl + 16 * c];
#pragma unroll
                for (int r = 0; r < 4; r++) acc[r][c] = fmaf(p[r], vv, acc[r][c]);
            }
        }
        __syncthreads();
    }

    float* ob = o + ((i64)b * Tq * Hq + h) * D;
#pragma unroll
    for (int r = 0; r < 4; r++)
    {
        int i = q0 + rg * 4 + r;
        if (i >= Tq) continue;
        float inv = l_run[r] > 0.0f ? 1.0f / l_run[r] : 0.0f;
#pragma unroll
        for (int c = 0; c < CPT; c++)
        {
            int col = cl + 16 * c;
            if (col < D) ob[i * qStride + col] = acc[r][c] * inv;
        }
        if (cl == 0)
            lse[((i64)b * Hq + h) * Tq + i] = l_run[r] > 0.0f ? (m_run[r] + log2f(l_run[r])) * LN2_F : uio_neg_inf();
    }
}

#define ATTN_FWD(NAME, DMAX, BK)                                                                                     \
    extern "C" __global__ void __launch_bounds__(256) NAME(const float* q, const float* k, const float* v, float* o,  \
        float* lse, int Tq, int Tk, int Hq, int Hkv, int D, float scale_log2, MASK_PARAMS)                          \
    {                                                                                                                \
        attn_fwd<DMAX, BK>(q, k, v, o, lse, Tq, Tk, Hq, Hkv, D, scale_log2, make_mask(MASK_ARGS));                  \
    }

ATTN_FWD(attn_fwd_d64, 64, 64)
ATTN_FWD(attn_fwd_d128, 128, 32)
ATTN_FWD(attn_fwd_d256, 256, 32)

// ---------------------------------------------------------------------------------------------- backward
// delta[b, h, i] = sum_c dO[b, i, h, c] * O[b, i, h, c]; one warp per (b, i, h) row.
extern "C" __global__ void attn_bwd_delta(const float* __restrict__ o, const float* __restrict__ dO, float* __restrict__ delta,
    int B, int Tq, int Hq, int D)
{
    i64 rows = (i64)B * Tq * Hq;
    i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* a = o + row * D;
    const float* g = dO + row * D;
    float s = 0.0f;
    for (int c = lane; c < D; c += 32) s = fmaf(a[c], g[c], s);
    s = warp_sum(s);
    if (lane == 0)
    {
        int h = (int)(row % Hq);
        i64 bi = row / Hq;
        int i = (int)(bi % Tq);
        int b = (int)(bi / Tq);
        delta[((i64)b * Hq + h) * Tq + i] = s;
    }
}

// Block: 256 threads, BK keys of one (batch, kv head); it walks every query head of the group and every query
// tile of 32 queries. dK and dV for its keys stay in registers (thread kg = t / 16 owns keys kg*KPT.., columns
// cl + 16 c) and are added once at the end; dQ is added to global memory with atomics (dq accumulates anyway).
template <int DMAX, int BK>
__device__ __forceinline__ void attn_bwd(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ dO, const float* __restrict__ lse, const float* __restrict__ delta,
    float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
    int Tq, int Tk, int Hq, int Hkv, int D, float scale, const UioMask mask)
{
    constexpr int BQ = 32, LD = DMAX + 1, KPT = BK / 16, CPT = DMAX / 16, LP = BQ + 1;
    extern __shared__ float smem[];
    float* Ks = smem;
    float* Vs = Ks + BK * LD;
    float* Qs = Vs + BK * LD;
    float* dOs = Qs + BQ * LD;
    float* Ps = dOs + BQ * LD;     // P^T [BK][BQ]
    float* dSs = Ps + BK * LP;     // dS^T [BK][BQ]
    __shared__ float s_lse[BQ], s_delta[BQ];
    __shared__ UioIntervals s_iv[BQ];

    const int t = threadIdx.x, cl = t & 15, kg = t >> 4;
    const int k0 = blockIdx.x * BK, hk = blockIdx.y, b = blockIdx.z;
    const int k1 = min(k0 + BK, Tk), group = Hq / Hkv;
    const i64 qStride = (i64)Hq * D, kStride = (i64)Hkv * D;
    const float scale_log2 = scale * LOG2E_F;

    const float* kb = k + ((i64)b * Tk * Hkv + hk) * D;
    const float* vb = v + ((i64)b * Tk * Hkv + hk) * D;
    for (int e = t; e < BK * D; e += 256)
    {
        int r = e / D, c = e - r * D;
        bool in = k0 + r < Tk;
        Ks[r * LD + c] = in ? kb[(k0 + r) * kStride + c] : 0.0f;
        Vs[r * LD + c] = in ? vb[(k0 + r) * kStride + c] : 0.0f;
    }

    float dk_acc[KPT][CPT], dv_acc[KPT][CPT];
#pragma unroll
    for (int r = 0; r < KPT; r++)
#pragma unroll
        for (int c = 0; c < CPT; c++) { dk_acc[r][c] = 0.0f; dv_acc[r][c] = 0.0f; }

    for (int g = 0; g < group; g++)
    {
        const int h = hk * group + g;
        const float* qb = q + ((i64)b * Tq * Hq + h) * D;
        const float* gb = dO + ((i64)b * Tq * Hq + h) * D;
        const float* lb = lse + ((i64)b * Hq + h) * Tq;
        const float* db = delta + ((i64)b * Hq + h) * Tq;
        float* dqb = dq == nullptr ? nullptr : dq + ((i64)b * Tq * Hq + h) * D;

        for (int q0 = 0; q0 < Tq; q0 += BQ)
        {
            __syncthreads();   // the previous tile is done with s_iv, Qs, dOs, Ps, dSs
            if (t < BQ)
            {
                if (q0 + t < Tq) s_iv[t] = uio_visible(mask, h, Hq, q0 + t, Tq, Tk);
                else s_iv[t].count = 0;
            }
            __syncthreads();
            bool any = t < BQ && q0 + t < Tq && uio_any(s_iv[t], k0, k1);
            if (!__syncthreads_or(any)) continue;

            for (int e = t; e < BQ * D; e += 256)
            {
                int r = e / D, c = e - r * D;
                bool in = q0 + r < Tq;
                Qs[r * LD + c] = in ? qb[(q0 + r) * qStride + c] : 0.0f;
                dOs[r * LD + c] = in ? gb[(q0 + r) * qStride + c] : 0.0f;
            }
            if (t < BQ)
            {
                bool in = q0 + t < Tq;
                s_lse[t] = in ? lb[q0 + t] * LOG2E_F : 0.0f;
                s_delta[t] = in ? db[q0 + t] : 0.0f;
            }
            __syncthreads();

            // S^T and dP^T for keys kg*KPT + r and queries cl, cl + 16.
            float s[KPT][2], dp[KPT][2];
#pragma unroll
            for (int r = 0; r < KPT; r++) { s[r][0] = s[r][1] = 0.0f; dp[r][0] = dp[r][1] = 0.0f; }
#pragma unroll 4
            for (int d = 0; d < D; d++)
            {
                float qv0 = Qs[cl * LD + d], qv1 = Qs[(cl + 16) * LD + d];
                float gv0 = dOs[cl * LD + d], gv1 = dOs[(cl + 16) * LD + d];
#pragma unroll
                for (int r = 0; r < KPT; r++)
                {
                    float kv = Ks[(kg * KPT + r) * LD + d], vv = Vs[(kg * KPT + r) * LD + d];
                    s[r][0] = fmaf(qv0, kv, s[r][0]);
                    s[r][1] = fmaf(qv1, kv, s[r][1]);
                    dp[r][0] = fmaf(gv0, vv, dp[r][0]);
                    dp[r][1] = fmaf(gv1, vv, dp[r][1]);
                }
            }
#pragma unroll
            for (int r = 0; r < KPT; r++)
            {
                int key = k0 + kg * KPT + r;
#pragma unroll
                for (int u = 0; u < 2; u++)
                {
                    int qi = cl + 16 * u;
                    bool vis = key < Tk && q0 + qi < Tq && uio_in(s_iv[qi], key);
                    float p = vis ? exp2f(s[r][u] * scale_log2 - s_lse[qi]) : 0.0f;
                    Ps[(kg * KPT + r) * LP + qi] = p;
                    dSs[(kg * KPT + r) * LP + qi] = p * (dp[r][u] - s_delta[qi]);
                }
            }
            __syncthreads();

            // dV += P^T dO, dK += dS^T Q (scaled at the end).
            for (int qi = 0; qi < BQ; qi++)
            {
                float pk[KPT], sk[KPT];
#pragma unroll
                for (int r = 0; r < KPT; r++)
                {
                    pk[r] = Ps[(kg * KPT + r) * LP + qi];
                    sk[r] = dSs[(kg * KPT + r) * LP + qi];
                }
#pragma unroll
                for (int c = 0; c < CPT; c++)
                {
                    float gv = dOs[qi * LD + cl + 16 * c], qv = Qs[qi * LD + cl + 16 * c];
#pragma unroll
                    for (int r = 0; r < KPT; r++)
                    {
                        dv_acc[r][c] = fmaf(pk[r], gv, dv_acc[r][c]);
                        dk_acc[r][c] = fmaf(sk[r], qv, dk_acc[r][c]);
                    }
                }
            }

            // dQ += scale * dS K for queries 2 kg, 2 kg + 1 and columns cl + 16 c.
            if (dqb != nullptr)
            {
                float dq_acc[2][CPT];
#pragma unroll
                for (int u = 0; u < 2; u++)
#pragma unroll
                    for (int c = 0; c < CPT; c++) dq_acc[u][c] = 0.0f;
                int kn = k1 - k0;
                for (int j = 0; j < kn; j++)
                {
                    float s0 = dSs[j * LP + 2 * kg], s1 = dSs[j * LP + 2 * kg + 1];
#pragma unroll
                    for (int c = 0; c < CPT; c++)
                    {
                        float kv = Ks[j * LD + cl + 16 * c];
                        dq_acc[0][c] = fmaf(s0, kv, dq_acc[0][c]);
                        dq_acc[1][c] = fmaf(s1, kv, dq_acc[1][c]);
                    }
                }
#pragma unroll
                for (int u = 0; u < 2; u++)
                {
                    int i = q0 + 2 * kg + u;
                    if (i >= Tq) continue;
#pragma unroll
                    for (int c = 0; c < CPT; c++)
                    {
                        int col = cl + 16 * c;
                        if (col < D && dq_acc[u][c] != 0.0f) atomicAdd(dqb + i * qStride + col, scale * dq_acc[u][c]);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < KPT; r++)
    {
        int key = k0 + kg * KPT + r;
        if (key >= Tk) continue;
        i64 base = ((i64)b * Tk * Hkv + hk) * D + key * kStride;
#pragma unroll
        for (int c = 0; c < CPT; c++)
        {
            int col = cl + 16 * c;
            if (col >= D) continue;
            if (dk != nullptr) dk[base + col] += scale * dk_acc[r][c];
            if (dv != nullptr) dv[base + col] += dv_acc[r][c];
        }
    }
}

#define ATTN_BWD(NAME, DMAX, BK)                                                                                     \
    extern "C" __global__ void __launch_bounds__(256) NAME(const float* q, const float* k, const float* v,            \
        const float* dO, const float* lse, const float* delta, float* dq, float* dk, float* dv,                      \
        int Tq, int Tk, int Hq, int Hkv, int D, float scale, MASK_PARAMS)                                            \
    {                                                                                                                \
        attn_bwd<DMAX, BK>(q, k, v, dO, lse, delta, dq, dk, dv, Tq, Tk, Hq, Hkv, D, scale, make_mask(MASK_ARGS));   \
    }

ATTN_BWD(attn_bwd_d64, 64, 64)
ATTN_BWD(attn_bwd_d128, 128, 32)
ATTN_BWD(attn_bwd_d256, 256, 32)
