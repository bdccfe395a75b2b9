using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace UioLlm.Kernels.Cpu.Gemm;

/// <summary>
/// The register-tiled inner kernels: C[MR x NR] = alpha * (sum over kc of a column of the packed A panel times
/// a row of the packed B panel) + beta * C. Packed A holds MR values per k step, packed B holds NR values per
/// k step, both contiguous, so the loop body is NR/W vector loads, MR broadcasts and MR*NR/W FMAs.
/// </summary>
internal static unsafe class MicroKernels
{
    /// <summary>AVX2 (or emulated 256-bit) kernel: 6 rows x 16 columns in 12 accumulators of 8 floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel6x16(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        PrefetchTile(c, ldc, 6, 16);
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var a0 = Vector256.Create(a[0]);
            c00 = Vector256.FusedMultiplyAdd(a0, b0, c00);
            c01 = Vector256.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector256.Create(a[1]);
            c10 = Vector256.FusedMultiplyAdd(a1, b0, c10);
            c11 = Vector256.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector256.Create(a[2]);
            c20 = Vector256.FusedMultiplyAdd(a2, b0, c20);
            c21 = Vector256.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector256.Create(a[3]);
            c30 = Vector256.FusedMultiplyAdd(a3, b0, c30);
            c31 = Vector256.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector256.Create(a[4]);
            c40 = Vector256.FusedMultiplyAdd(a4, b0, c40);
            c41 = Vector256.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector256.Create(a[5]);
            c50 = Vector256.FusedMultiplyAdd(a5, b0, c50);
            c51 = Vector256.FusedMultiplyAdd(a5, b1, c51);
            a += 6;
            b += 16;
        }
        var va = Vector256.Create(alpha);
        if (beta == 0f)
        {
            // beta = 0 never reads C, so garbage (even NaN) already there is ignored.
            Vector256.Store(c00 * va, c); Vector256.Store(c01 * va, c + 8); c += ldc;
            Vector256.Store(c10 * va, c); Vector256.Store(c11 * va, c + 8); c += ldc;
            Vector256.Store(c20 * va, c); Vector256.Store(c21 * va, c + 8); c += ldc;
            Vector256.Store(c30 * va, c); Vector256.Store(c31 * va, c + 8); c += ldc;
            Vector256.Store(c40 * va, c); Vector256.Store(c41 * va, c + 8); c += ldc;
            Vector256.Store(c50 * va, c); Vector256.Store(c51 * va, c + 8);
        }
        else
        {
            var vb = Vector256.Create(beta);
            Update(c, c00, c01, va, vb); c += ldc;
            Update(c, c10, c11, va, vb); c += ldc;
            Update(c, c20, c21, va, vb); c += ldc;
            Update(c, c30, c31, va, vb); c += ldc;
            Update(c, c40, c41, va, vb); c += ldc;
            Update(c, c50, c51, va, vb);
        }
    }

    /// <summary>Start pulling the C tile into L1 while the k loop runs (its rows are far apart in memory).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchTile(float* c, nint ldc, int rows, int cols)
    {
        if (!Sse.IsSupported) return;
        for (int r = 0; r < rows; r++)
        {
            float* row = c + r * ldc;
            for (int j = 0; j < cols; j += 16) Sse.Prefetch0(row + j);
            Sse.Prefetch0(row + cols - 1); // the row may straddle one more cache line
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Update(float* c, Vector256<float> lo, Vector256<float> hi, Vector256<float> alpha, Vector256<float> beta)
    {
        Vector256.Store(Vector256.FusedMultiplyAdd(lo, alpha, Vector256.Load(c) * beta), c);
        Vector256.Store(Vector256.FusedMultiplyAdd(hi, alpha, Vector256.Load(c + 8) * beta), c + 8);
    }

    /// <summary>AVX-512 kernel: 12 rows x 32 columns in 24 accumulators of 16 floats (of the 32 zmm registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel12x32(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        PrefetchTile(c, ldc, 12, 32);
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default;
        Vector512<float> c90 = default, c91 = default, cA0 = default, cA1 = default, cB0 = default, cB1 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var ai = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(ai, b0, c00); c01 = Vector512.FusedMultiplyAdd(ai, b1, c01);
            ai = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(ai, b0, c10); c11 = Vector512.FusedMultiplyAdd(ai, b1, c11);
            ai = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(ai, b0, c20); c21 = Vector512.FusedMultiplyAdd(ai, b1, c21);
            ai = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(ai, b0, c30); c31 = Vector512.FusedMultiplyAdd(ai, b1, c31);
            ai = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(ai, b0, c40); c41 = Vector512.FusedMultiplyAdd(ai, b1, c41);
            ai = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(ai, b0, c50); c51 = Vector512.FusedMultiplyAdd(ai, b1, c51);
            ai = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(ai, b0, c60); c61 = Vector512.FusedMultiplyAdd(ai, b1, c61);
            ai = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(ai, b0, c70); c71 = Vector512.FusedMultiplyAdd(ai, b1, c71);
            ai = Vector512.Create(a[8]);
            c80 = Vector512.FusedMultiplyAdd(ai, b0, c80); c81 = Vector512.FusedMultiplyAdd(ai, b1, c81);
            ai = Vector512.Create(a[9]);
            c90 = Vector512.FusedMultiplyAdd(ai, b0, c90); c91 = Vector512.FusedMultiplyAdd(ai, b1, c91);
            ai = Vector512.Create(a[10]);
            cA0 = Vector512.FusedMultiplyAdd(ai, b0, cA0); cA1 = Vector512.FusedMultiplyAdd(ai, b1, cA1);
            ai = Vector512.Create(a[11]);
            cB0 = Vector512.FusedMultiplyAdd(ai, b0, cB0); cB1 = Vector512.FusedMultiplyAdd(ai, b1, cB1);
            a += 12;
            b += 32;
        }
        var va = Vector512.Create(alpha);
        var vb = Vector512.Create(beta);
        bool read = beta != 0f; // beta = 0 never reads C
        Update(c, c00, c01, va, vb, read); c += ldc;
        Update(c, c10, c11, va, vb, read); c += ldc;
        Update(c, c20, c21, va, vb, read); c += ldc;
        Update(c, c30, c31, va, vb, read); c += ldc;
        Update(c, c40, c41, va, vb, read); c += ldc;
        Update(c, c50, c51, va, vb, read); c += ldc;
        Update(c, c60, c61, va, vb, read); c += ldc;
        Update(c, c70, c71, va, vb, read); c += ldc;
        Update(c, c80, c81, va, vb, read); c += ldc;
        Update(c, c90, c91, va, vb, read); c += ldc;
        Update(c, cA0, cA1, va, vb, read); c += ldc;
        Update(c, cB0, cB1, va, vb, read);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Update(float* c, Vector512<float> lo, Vector512<float> hi, Vector512<float> alpha, Vector512<float> beta, bool read)
    {
        if (read)
        {
            Vector512.Store(Vector512.FusedMultiplyAdd(lo, alpha, Vector512.Load(c) * beta), c);
            Vector512.Store(Vector512.FusedMultiplyAdd(hi, alpha, Vector512.Load(c + 16) * beta), c + 16);
        }
        else
        {
            Vector512.Store(lo * alpha, c);
            Vector512.Store(hi * alpha, c + 16);
        }
    }
}
