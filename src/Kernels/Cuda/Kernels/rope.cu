// Rotary position embedding over x [B, T, H, D] (or [T, H, D]). One thread per (position entry, rotated pair):
// the angle position * inverse frequency, its sine and cosine are computed in double (as the CPU kernels do)
// and multiplied by the attention factor, then every head (and, with shared positions, every batch row) at
// that position is rotated. Backward applies the transpose (sin negated) and accumulates into dst.
// y may alias x in the forward: each pair is read before it is written, by the same thread.
#include "uio_common.cuh"

extern "C" __global__ void rope(const float* src, float* dst, const int* __restrict__ positions, const double* __restrict__ inv_freq,
    double factor, int count, int T, int H, int D, int rows_per_position, int interleaved, int backward)
{
    int half = D / 2;
    UIO_GRID_LOOP(e, (i64)count * half)
    {
        int p = (int)(e / half), i = (int)(e - (i64)p * half);
        double sa, ca;
        sincos((double)positions[p] * inv_freq[i], &sa, &ca);
        float c = (float)(ca * factor);
        float s = (float)(sa * factor);
        if (backward) s = -s;
        int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
        for (int b = 0; b < rows_per_position; b++)
        {
            i64 row = rows_per_position > 1 ? (i64)b * T + p : p;
            const float* x = src + row * H * D;
            float* y = dst + row * H * D;
            for (int h = 0; h < H; h++)
            {
                float a = x[h * D + ia], bb = x[h * D + ib];
                float ra = a * c - bb * s, rb = bb * c + a * s;
                if (backward)
                {
                    y[h * D + ia] += ra;
                    y[h * D + ib] += rb;
                }
                else
                {
                    y[h * D + ia] = ra;
                    y[h * D + ib] = rb;
                }
            }
        }
    }
}
