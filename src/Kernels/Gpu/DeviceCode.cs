using ILGPU;
using ILGPU.Algorithms;

namespace UioLlm.Kernels.Gpu;

/// <summary>Scalars of the tiled GEMM: C[z] = alpha op(A[z]) op(B[z]) + beta C[z] for z = the grid's Z index.</summary>
public struct GemmArgs
{
    public int M, N, K, Lda, Ldb, Ldc, TransA, TransB;
    public long StrideA, StrideB, StrideC;
    public float Alpha, Beta;
}

/// <summary>Scalars of the attention kernels: sizes, scale, the <see cref="AttentionMask"/> fields and the tile sizes.</summary>
public struct AttentionArgs
{
    public int Tq, Tk, Hq, Hkv, D;
    public float Scale;
    public int Prefix, Causal, Window, Sinks, MemoryCount, StepStride, GroupSize, Shift, MemoryCausal, WindowSpansPrefix;
    public int BlockQ, BlockK;
}

/// <summary>AdamW's per-step constants, folded on the host in double as the CPU backend does.</summary>
public struct AdamWArgs
{
    public float Beta1, Beta2, OneMinusBeta1, OneMinusBeta2, Correction1, Correction2, LearningRate, Epsilon, Decay, GradScale;
}

/// <summary>Scalars of the RoPE kernel.</summary>
public struct RopeArgs
{
    public int Count, Heads, HeadDim, RowsPerPosition, Tokens, Interleaved, Accumulate;
}

/// <summary>Up to three sorted, disjoint key intervals [S, E) a query sees (the device form of <see cref="AttentionMask.VisibleIntervals"/>).</summary>
public struct KeyIntervals
{
    public int S0, E0, S1, E1, S2, E2, Count;

    public readonly int Start => Count == 0 ? 0 : S0;

    public readonly int End => Count switch { 0 => 0, 1 => E0, 2 => E1, _ => E2 };

    public readonly bool Contains(int j) =>
        (Count > 0 && j >= S0 && j < E0) || (Count > 1 && j >= S1 && j < E1) || (Count > 2 && j >= S2 && j < E2);

    public void Append(int start, int end)
    {
        if (end <= start) return;
        int last = End;
        if (Count > 0 && start <= last)
        {
            if (end > last)
            {
                if (Count == 1) E0 = end;
                else if (Count == 2) E1 = end;
                else E2 = end;
            }
            return;
        }
        if (Count == 0) { S0 = start; E0 = end; }
        else if (Count == 1) { S1 = start; E1 = end; }
        else { S2 = start; E2 = end; }
        Count++;
    }
}

/// <summary>
/// The ILGPU kernels: plain C# methods that ILGPU compiles to PTX (CUDA) or OpenCL, and that its CPU accelerator runs
/// as .NET code with real barriers, shared memory and atomics. Forward ops overwrite, backward ops accumulate, as
/// <see cref="IKernels"/> specifies. Explicitly grouped kernels read Grid/Group indices; the others take an Index1D.
/// No kernel assumes a warp size.
/// </summary>
public static class DeviceCode
{
    /// <summary>GEMM tile edge: a group computes a GemmTile x GemmTile block of C.</summary>
    public const int GemmTile = 16;

    /// <summary>Thread rows of a GEMM group (GemmTile x GemmRowThreads threads; each thread GemmTile / GemmRowThreads rows).</summary>
    public const int GemmRowThreads = 4;

    /// <summary>Threads of a row-reduction group (RmsNorm, cross-entropy, sums of squares); a power of two.</summary>
    public const int RowGroup = 64;

    /// <summary>Most threads any kernel puts in a group (the simulated CPU device is sized to it).</summary>
    public const int MaxGroupThreads = 64;

    // ------------------------------------------------------------------------------------------ reductions

    /// <summary>Sum over the group (Group.DimX a power of two &lt;= 1024); every thread gets the result.</summary>
    private static float GroupSum(float value)
    {
        var s = SharedMemory.Allocate<float>(1024);
        int t = Group.IdxX;
        s[t] = value;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride /= 2)
        {
            if (t < stride) s[t] += s[t + stride];
            Group.Barrier();
        }
        float r = s[0];
        Group.Barrier();
        return r;
    }

    private static float GroupMax(float value)
    {
        var s = SharedMemory.Allocate<float>(1024);
        int t = Group.IdxX;
        s[t] = value;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride /= 2)
        {
            if (t < stride) s[t] = XMath.Max(s[t], s[t + stride]);
            Group.Barrier();
        }
        float r = s[0];
        Group.Barrier();
        return r;
    }

    private static double GroupSumDouble(double value)
    {
        var s = SharedMemory.Allocate<double>(1024);
        int t = Group.IdxX;
        s[t] = value;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride /= 2)
        {
            if (t < stride) s[t] += s[t + stride];
            Group.Barrier();
        }
        double r = s[0];
        Group.Barrier();
        return r;
    }

    // ------------------------------------------------------------------------------------------ GEMM

    /// <summary>
    /// Shared-memory tiled GEMM for every transpose case: a 16 x 16 tile of C per group of 16 x 4 threads, each thread
    /// four rows of one column. Grid (ceil(N/16), ceil(M/16), batch). With beta = 0, C is not read.
    /// </summary>
    public static void Gemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
    {
        const int stride = GemmTile + 1;
        var tileA = SharedMemory.Allocate<float>(GemmTile * stride);
        var tileB = SharedMemory.Allocate<float>(GemmTile * stride);
        int tx = Group.IdxX, ty = Group.IdxY;
        int rowBase = Grid.IdxY * GemmTile, col = Grid.IdxX * GemmTile + tx;
        long z = Grid.IdxZ;
        long baseA = z * p.StrideA, baseB = z * p.StrideB;
        float acc0 = 0f, acc1 = 0f, acc2 = 0f, acc3 = 0f;
        for (int k0 = 0; k0 < p.K; k0 += GemmTile)
        {
            for (int r = ty; r < GemmTile; r += GemmRowThreads)
            {
                int row = rowBase + r, ak = k0 + tx;
                float av = 0f;
                if (row < p.M && ak < p.K)
                    av = p.TransA == 0 ? a[baseA + (long)row * p.Lda + ak] : a[baseA + (long)ak * p.Lda + row];
                tileA[r * stride + tx] = av;
                int bk = k0 + r;
                float bv = 0f;
                if (col < p.N && bk < p.K)
                    bv = p.TransB == 0 ? b[baseB + (long)bk * p.Ldb + col] : b[baseB + (long)col * p.Ldb + bk];
                tileB[r * stride + tx] = bv;
            }
            Group.Barrier();
            for (int kk = 0; kk < GemmTile; kk++)
            {
                float bv = tileB[kk * stride + tx];
                acc0 += tileA[ty * stride + kk] * bv;
                acc1 += tileA[(ty + 4) * stride + kk] * bv;
                acc2 += tileA[(ty + 8) * stride + kk] * bv;
                acc3 += tileA[(ty + 12) * stride + kk] * bv;
            }
            Group.Barrier();
        }
        if (col >= p.N) return;
        StoreC(c, p, z, rowBase + ty, col, acc0);
        StoreC(c, p, z, rowBase + ty + 4, col, acc1);
        StoreC(c, p, z, rowBase + ty + 8, col, acc2);
        StoreC(c, p, z, rowBase + ty + 12, col, acc3);
    }

    private static void StoreC(ArrayView<float> c, in GemmArgs p, long z, int row, int col, float acc)
    {
        if (row >= p.M) return;
        long idx = z * p.StrideC + (long)row * p.Ldc + col;
        c[idx] = p.Beta == 0f ? p.Alpha * acc : p.Alpha * acc + p.Beta * c[idx];
    }

    // ------------------------------------------------------------------------------------------ elementwise

    public static void Add(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] + b[i];

    public static void Multiply(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] * b[i];

    public static void Scale(Index1D i, ArrayView<float> x, float s, ArrayView<float> y) => y[i] = s * x[i];

    public static void Axpy(Index1D i, float alpha, ArrayView<float> x, ArrayView<float> y) => y[i] += alpha * x[i];

    public static void Fill(Index1D i, ArrayView<float> t, float value) => t[i] = value;

    public static void Copy(Index1D i, ArrayView<float> src, ArrayView<float> dst) => dst[i] = src[i];

    // ------------------------------------------------------------------------------------------ SwiGLU

    public static void SwiGlu(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> h)
    {
        float g = gate[i];
        h[i] = g / (1f + XMath.Exp(-g)) * up[i];
    }

    /// <summary>s = sigmoid(g): dGate += dh u s (1 + g (1 - s)), dUp += dh g s; flags say which gradients exist.</summary>
    public static void SwiGluBackward(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> dh,
        ArrayView<float> dGate, ArrayView<float> dUp, int hasGate, int hasUp)
    {
        float g = gate[i], u = up[i], d = dh[i];
        float s = 1f / (1f + XMath.Exp(-g));
        if (hasGate != 0) dGate[i] += d * u * s * (1f + g * (1f - s));
        if (hasUp != 0) dUp[i] += d * g * s;
    }

    // ------------------------------------------------------------------------------------------ soft-capping

    public static void Softcap(Index1D i, ArrayView<float> x, ArrayView<float> y, float cap, float inv) => y[i] = cap * XMath.Tanh(x[i] * inv);

    public static void SoftcapBackward(Index1D i, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx, float inv)
    {
        float t = XMath.Tanh(x[i] * inv);
        dx[i] += dy[i] * (1f - t * t);
    }

    // ------------------------------------------------------------------------------------------ AdamW

    public static void AdamW(Index1D i, ArrayView<float> p, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, AdamWArgs k)
    {
        float g = grad[i] * k.GradScale;
        float mi = k.Beta1 * m[i] + k.OneMinusBeta1 * g;
        float vi = k.Beta2 * v[i] + k.OneMinusBeta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float update = mi * k.Correction1 / (XMath.Sqrt(vi * k.Correction2) + k.Epsilon);
        p[i] = p[i] * k.Decay - k.LearningRate * update;
    }

    /// <summary>partial[group] = sum of x^2 over the group's grid-stride share, in double; group size <see cref="RowGroup"/>.</summary>
    public static void SumSquares(ArrayView<float> x, ArrayView<double> partial)
    {
        double s = 0;
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = (long)Grid.IdxX * Group.DimX + Group.IdxX; i < x.Length; i += stride)
        {
            double v = x[i];
            s += v * v;
        }
        s = GroupSumDouble(s);
        if (Group.IdxX == 0) partial[Grid.IdxX] = s;
    }

    // ------------------------------------------------------------------------------------------ RoPE

    /// <summary>
    /// One thread per (position entry, head, pair): rotate the pair by the host-computed cos / sin of the entry
    /// (sin already negated for the inverse rotation). Forward writes, backward (Accumulate = 1) adds.
    /// </summary>
    public static void Rope(Index1D index, ArrayView<float> src, ArrayView<float> dst, ArrayView<float> cos, ArrayView<float> sin, RopeArgs a)
    {
        int half = a.HeadDim / 2;
        int pair = index % half;
        int rest = index / half;
        int head = rest % a.Heads;
        int entry = rest / a.Heads;
        float c = cos[(long)entry * half + pair], s = sin[(long)entry * half + pair];
        int i0 = a.Interleaved != 0 ? 2 * pair : pair;
        int i1 = a.Interleaved != 0 ? 2 * pair + 1 : pair + half;
        for (int r = 0; r < a.RowsPerPosition; r++)
        {
            long row = a.RowsPerPosition > 1 ? (long)r * a.Tokens + entry : entry;
            long baseIndex = (row * a.Heads + head) * a.HeadDim;
            float x0 = src[baseIndex + i0], x1 = src[baseIndex + i1];
            float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
            if (a.Accumulate != 0)
            {
                dst[baseIndex + i0] += y0;
                dst[baseIndex + i1] += y1;
            }
            else
            {
                dst[baseIndex + i0] = y0;
                dst[baseIndex + i1] = y1;
            }
        }
    }

    // ------------------------------------------------------------------------------------------ RMSNorm

    /// <summary>One group per row (grid-stride over rows): rstd = 1 / sqrt(mean(x^2) + eps), y = x rstd w.</summary>
    public static void RmsNorm(ArrayView<float> x, ArrayView<float> w, ArrayView<float> y, ArrayView<float> rstd, int rows, int d, float eps)
    {
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long b = (long)r * d;
            float ss = 0f;
            for (int j = Group.IdxX; j < d; j += Group.DimX) ss += x[b + j] * x[b + j];
            ss = GroupSum(ss);
            float rs = 1f / XMath.Sqrt(ss / d + eps);
            if (Group.IdxX == 0) rstd[r] = rs;
            for (int j = Group.IdxX; j < d; j += Group.DimX) y[b + j] = x[b + j] * rs * w[j];
        }
    }

    /// <summary>dx += rstd w dy - x rstd^3 (sum_k dy_k w_k x_k) / d, one group per row.</summary>
    public static void RmsNormBackwardInput(ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, ArrayView<float> dy, ArrayView<float> dx, int rows, int d)
    {
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long b = (long)r * d;
            float dot = 0f;
            for (int j = Group.IdxX; j < d; j += Group.DimX) dot += dy[b + j] * w[j] * x[b + j];
            dot = GroupSum(dot);
            float rs = rstd[r];
            float k = rs * rs * rs * dot / d;
            for (int j = Group.IdxX; j < d; j += Group.DimX) dx[b + j] += rs * w[j] * dy[b + j] - x[b + j] * k;
        }
    }

    /// <summary>dWeight[j] += sum over rows of dy x rstd; one thread per column.</summary>
    public static void RmsNormBackwardWeight(Index1D j, ArrayView<float> x, ArrayView<float> rstd, ArrayView<float> dy, ArrayView<float> dw, int rows, int d)
    {
        float s = 0f;
        for (int r = 0; r < rows; r++) s += dy[(long)r * d + j] * x[(long)r * d + j] * rstd[r];
        dw[j] += s;
    }

    // ------------------------------------------------------------------------------------------ embedding

    public static void Embedding(Index1D i, ArrayView<float> table, ArrayView<int> ids, ArrayView<float> output, int d)
    {
        int t = i / d, j = i % d;
        output[i] = table[(long)ids[t] * d + j];
    }

    /// <summary>dTable[ids[t]] += dOutput[t] with atomic adds (repeated ids add up).</summary>
    public static void EmbeddingBackward(Index1D i, ArrayView<int> ids, ArrayView<float> dOutput, ArrayView<float> dTable, int d)
    {
        int t = i / d, j = i % d;
        Atomic.Add(ref dTable[(long)ids[t] * d + j], dOutput[i]);
    }

    // ------------------------------------------------------------------------------------------ cross-entropy

    /// <summary>One group per row: lse = log sum exp(x); loss[row] = lse - x[target] (0 on ignored rows).</summary>
    public static void CrossEntropy(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> lse, ArrayView<float> loss, int rows, int vocab, int ignoreIndex)
    {
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            float l = RowLogSumExp(logits, (long)r * vocab, vocab);
            if (Group.IdxX == 0)
            {
                int t = targets[r];
                lse[r] = t == ignoreIndex ? 0f : l;   // ignored rows: 0, as the CPU backend writes
                loss[r] = t == ignoreIndex ? 0f : l - logits[(long)r * vocab + t];
            }
        }
    }

    private static float RowLogSumExp(ArrayView<float> x, long b, int n)
    {
        float m = float.NegativeInfinity;
        for (int j = Group.IdxX; j < n; j += Group.DimX) m = XMath.Max(m, x[b + j]);
        m = GroupMax(m);
        float s = 0f;
        for (int j = Group.IdxX; j < n; j += Group.DimX) s += XMath.Exp(x[b + j] - m);
        s = GroupSum(s);
        return m + XMath.Log(s);
    }

    /// <summary>dLogits += scale (softmax - onehot) on valid rows; one thread per element.</summary>
    public static void CrossEntropyBackward(Index1D i, ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> lse, ArrayView<float> dLogits,
        int vocab, int ignoreIndex, float scale)
    {
        int r = (int)(i / vocab), j = (int)(i % vocab);
        int t = targets[r];
        if (t == ignoreIndex) return;
        float g = XMath.Exp(logits[i] - lse[r]);
        if (j == t) g -= 1f;
        dLogits[i] += scale * g;
    }

    /// <summary>
    /// Loss and gradient in one pass per row (one group per row): dLogits = scale (softmax - onehot), 0 on ignored rows.
    /// dLogits may be logits: each thread reads its elements before writing them, and x[target] is read before any write.
    /// </summary>
    public static void CrossEntropyFused(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> lse, ArrayView<float> loss,
        ArrayView<float> dLogits, int rows, int vocab, int ignoreIndex, float scale)
    {
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long b = (long)r * vocab;
            int t = targets[r];
            bool valid = t != ignoreIndex;
            float xt = valid ? logits[b + t] : 0f;
            float l = RowLogSumExp(logits, b, vocab);   // ends with a barrier: every thread has read x[target]
            if (Group.IdxX == 0)
            {
                lse[r] = valid ? l : 0f;
                loss[r] = valid ? l - xt : 0f;
            }
            for (int j = Group.IdxX; j < vocab; j += Group.DimX)
            {
                float g = 0f;
                if (valid)
                {
                    g = XMath.Exp(logits[b + j] - l);
                    if (j == t) g -= 1f;
                    g *= scale;
                }
                dLogits[b + j] = g;
            }
            Group.Barrier();
        }
    }

    // ------------------------------------------------------------------------------------------ attention

    /// <summary>The keys query <paramref name="i"/> of head <paramref name="head"/> sees (AttentionMask.VisibleIntervals on the device).</summary>
    public static KeyIntervals Visible(in AttentionArgs a, int head, int i)
    {
        var r = default(KeyIntervals);
        int p = a.Prefix, tq = a.Tq, tk = a.Tk;
        int rq = tk - tq + i - p;
        r.Append(ClipsPrefix(a, rq) ? XMath.Max(0, p + rq - a.Window + 1) : 0, XMath.Min(p, tk));   // the prefix (AttentionMask.WindowSpansPrefix)
        bool positional = a.Causal != 0 || a.Window > 0 || a.MemoryCount > 0 || a.GroupSize > 0;
        if (!positional)
        {
            r.Append(p, tk);
            return r;
        }
        int n = tk - p;
        if (a.MemoryCount > 0)
        {
            int l = tq - a.MemoryCount;
            if (rq < l) r.Append(a.Window > 0 ? p + XMath.Max(0, rq - a.Window + 1) : p, p + rq + 1);   // a local layer's window for ordinary tokens
            else
            {
                r.Append(p, p + XMath.Min((rq - l + 1) * a.StepStride, l));
                r.Append(a.MemoryCausal != 0 ? p + l : p + rq, p + rq + 1);
            }
            return r;
        }
        int lo = 0, hi = n;
        if (a.Causal != 0) hi = XMath.Min(hi, rq + 1);
        if (a.GroupSize > 0)
        {
            int shift = a.Shift != 0 && head >= a.Hq / 2 ? a.GroupSize / 2 : 0;
            int start = (rq + shift) / a.GroupSize * a.GroupSize - shift;
            lo = XMath.Max(lo, start);
            hi = XMath.Min(hi, start + a.GroupSize);
        }
        if (a.Window > 0)
        {
            r.Append(p + lo, p + XMath.Min(a.Sinks, hi));
            r.Append(p + XMath.Max(lo, rq - a.Window + 1), p + hi);
        }
        else r.Append(p + lo, p + hi);
        return r;
    }

    /// <summary>The union [lo, hi) of the key ranges the group's queries see, through shared atomics (lo &gt;= hi: none).</summary>
    private static void GroupKeyRange(KeyIntervals mine, bool active, out int lo, out int hi)
    {
        var bounds = SharedMemory.Allocate<int>(2);
        if (Group.IdxX == 0)
        {
            bounds[0] = int.MaxValue;
            bounds[1] = 0;
        }
        Group.Barrier();
        if (active && mine.Count > 0)
        {
            Atomic.Min(ref bounds[0], mine.Start);
            Atomic.Max(ref bounds[1], mine.End);
        }
        Group.Barrier();
        lo = bounds[0];
        hi = bounds[1];
        Group.Barrier();
    }

    /// <summary>Load keys [k0, k0 + count) of kv head <paramref name="kvh"/> (rows of D) into a shared tile, zero past Tk.</summary>
    private static void LoadKeyTile(ArrayView<float> src, ArrayView<float> tile, in AttentionArgs a, long batch, int kvh, int k0, int count, int threads, int tid)
    {
        int total = count * a.D;
        for (int idx = tid; idx < total; idx += threads)
        {
            int r = idx / a.D, c = idx % a.D;
            int j = k0 + r;
            tile[idx] = j < a.Tk ? src[((batch * a.Tk + j) * a.Hkv + kvh) * a.D + c] : 0f;
        }
    }

    /// <summary>
    /// Flash-style forward: a group of BlockQ threads owns BlockQ queries of one head (one query a thread); K and V
    /// tiles of BlockK keys go through dynamic shared memory [K tile | V tile | O accumulators]; online softmax.
    /// Grid (ceil(Tq / BlockQ), Hq, B). A query that sees no key gets o = 0, lse = -inf.
    /// </summary>
    public static void AttentionForward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> lse, AttentionArgs a)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int bq = a.BlockQ, bk = a.BlockK, d = a.D;
        var kt = shared.SubView(0, (long)bk * d);
        var vt = shared.SubView((long)bk * d, (long)bk * d);
        var acc = shared.SubView(2L * bk * d, (long)bq * d);
        int tid = Group.IdxX;
        int i = Grid.IdxX * bq + tid, h = Grid.IdxY;
        long b = Grid.IdxZ;
        int kvh = h / (a.Hq / a.Hkv);
        bool active = i < a.Tq;
        var mine = active ? Visible(a, h, i) : default;
        GroupKeyRange(mine, active, out int lo, out int hi);
        long qBase = ((b * a.Tq + i) * a.Hq + h) * d;
        long accBase = (long)tid * d;
        for (int c = 0; c < d; c++) acc[accBase + c] = 0f;
        float m = float.NegativeInfinity, l = 0f;
        for (int k0 = lo; k0 < hi; k0 += bk)
        {
            int count = XMath.Min(bk, hi - k0);
            LoadKeyTile(k, kt, a, b, kvh, k0, count, bq, tid);
            LoadKeyTile(v, vt, a, b, kvh, k0, count, bq, tid);
            Group.Barrier();
            if (active)
            {
                for (int r = 0; r < count; r++)
                {
                    if (!mine.Contains(k0 + r)) continue;
                    float s = 0f;
                    for (int c = 0; c < d; c++) s += q[qBase + c] * kt[(long)r * d + c];
                    s *= a.Scale;
                    if (s > m)
                    {
                        float correction = XMath.Exp(m - s);
                        l *= correction;
                        for (int c = 0; c < d; c++) acc[accBase + c] *= correction;
                        m = s;
                    }
                    float pr = XMath.Exp(s - m);
                    l += pr;
                    for (int c = 0; c < d; c++) acc[accBase + c] += pr * vt[(long)r * d + c];
                }
            }
            Group.Barrier();
        }
        if (!active) return;
        long lseIndex = (b * a.Hq + h) * a.Tq + i;
        if (l == 0f)
        {
            for (int c = 0; c < d; c++) o[qBase + c] = 0f;
            lse[lseIndex] = float.NegativeInfinity;
            return;
        }
        float inv = 1f / l;
        for (int c = 0; c < d; c++) o[qBase + c] = acc[accBase + c] * inv;
        lse[lseIndex] = m + XMath.Log(l);
    }

    /// <summary>delta[b, h, i] = sum_c dO[b, i, h, c] o[b, i, h, c]: one thread per query row.</summary>
    public static void AttentionDelta(Index1D index, ArrayView<float> o, ArrayView<float> dO, ArrayView<float> delta, int tq, int hq, int d)
    {
        int h = index % hq;
        int rest = index / hq;
        int i = rest % tq;
        int b = rest / tq;
        long baseIndex = (long)(int)index * d;
        float s = 0f;
        for (int c = 0; c < d; c++) s += dO[baseIndex + c] * o[baseIndex + c];
        delta[((long)b * hq + h) * tq + i] = s;
    }

    /// <summary>
    /// dq += scale sum_j p_ij (dO_i . v_j - delta_i) k_j with p recomputed from the saved lse. Same layout as the
    /// forward: BlockQ queries a group, K and V tiles and the dq accumulators in dynamic shared memory.
    /// </summary>
    public static void AttentionBackwardQuery(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dq, AttentionArgs a)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int bq = a.BlockQ, bk = a.BlockK, d = a.D;
        var kt = shared.SubView(0, (long)bk * d);
        var vt = shared.SubView((long)bk * d, (long)bk * d);
        var acc = shared.SubView(2L * bk * d, (long)bq * d);
        int tid = Group.IdxX;
        int i = Grid.IdxX * bq + tid, h = Grid.IdxY;
        long b = Grid.IdxZ;
        int kvh = h / (a.Hq / a.Hkv);
        bool active = i < a.Tq;
        var mine = active ? Visible(a, h, i) : default;
        GroupKeyRange(mine, active, out int lo, out int hi);
        long qBase = ((b * a.Tq + i) * a.Hq + h) * d;
        long accBase = (long)tid * d;
        for (int c = 0; c < d; c++) acc[accBase + c] = 0f;
        long rowIndex = (b * a.Hq + h) * a.Tq + i;
        float li = active ? lse[rowIndex] : 0f, di = active ? delta[rowIndex] : 0f;
        for (int k0 = lo; k0 < hi; k0 += bk)
        {
            int count = XMath.Min(bk, hi - k0);
            LoadKeyTile(k, kt, a, b, kvh, k0, count, bq, tid);
            LoadKeyTile(v, vt, a, b, kvh, k0, count, bq, tid);
            Group.Barrier();
            if (active)
            {
                for (int r = 0; r < count; r++)
                {
                    if (!mine.Contains(k0 + r)) continue;
                    float s = 0f, dp = 0f;
                    for (int c = 0; c < d; c++)
                    {
                        s += q[qBase + c] * kt[(long)r * d + c];
                        dp += dO[qBase + c] * vt[(long)r * d + c];
                    }
                    float pr = XMath.Exp(s * a.Scale - li);
                    float ds = pr * (dp - di) * a.Scale;
                    for (int c = 0; c < d; c++) acc[accBase + c] += ds * kt[(long)r * d + c];
                }
            }
            Group.Barrier();
        }
        if (!active) return;
        for (int c = 0; c < d; c++) dq[qBase + c] += acc[accBase + c];
    }

    /// <summary>True when query rq (relative to the prefix) sees the prefix only within its window (<see cref="AttentionMask.WindowSpansPrefix"/>).</summary>
    private static bool ClipsPrefix(in AttentionArgs a, int rq) =>
        a.WindowSpansPrefix != 0 && a.MemoryCount > 0 && a.Window > 0 && rq < a.Tq - a.MemoryCount;

    /// <summary>May query i (head h) see key j? The device form of <see cref="AttentionMask.IsVisible"/>.</summary>
    public static bool IsVisible(in AttentionArgs a, int head, int i, int j)
    {
        int p = a.Prefix;
        int rq = a.Tk - a.Tq + i - p;
        if (j < p) return !ClipsPrefix(a, rq) || rq + p - j < a.Window;
        int rk = j - p;
        if (a.MemoryCount > 0)
        {
            int l = a.Tq - a.MemoryCount;
            if (rq < l) return rk <= rq && (a.Window == 0 || rq - rk < a.Window);
            int m = rq - l;
            return rk == rq || rk < XMath.Min((m + 1) * a.StepStride, l) || (a.MemoryCausal != 0 && rk >= l && rk < rq);
        }
        if (a.Causal != 0 && rk > rq) return false;
        if (a.Window > 0 && rq - rk >= a.Window && rk >= a.Sinks) return false;
        if (a.GroupSize > 0)
        {
            int shift = a.Shift != 0 && head >= a.Hq / 2 ? a.GroupSize / 2 : 0;
            if ((rq + shift) / a.GroupSize != (rk + shift) / a.GroupSize) return false;
        }
        return true;
    }

    /// <summary>
    /// dk, dv of one kv head: a group of BlockK threads owns BlockK keys (one key a thread) and walks every query of
    /// every query head that reads this kv head, in tiles of BlockQ queries (q and dO tiles in shared memory, dk and dv
    /// accumulators after them). No two groups write the same rows, so no atomics. Grid (ceil(Tk / BlockK), Hkv, B).
    /// </summary>
    public static void AttentionBackwardKeyValue(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dk, ArrayView<float> dv, int hasDk, int hasDv, AttentionArgs a)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int bq = a.BlockQ, bk = a.BlockK, d = a.D;
        var qt = shared.SubView(0, (long)bq * d);
        var ot = shared.SubView((long)bq * d, (long)bq * d);
        var dkAcc = shared.SubView(2L * bq * d, (long)bk * d);
        var dvAcc = shared.SubView(2L * bq * d + (long)bk * d, (long)bk * d);
        int tid = Group.IdxX;
        int j = Grid.IdxX * bk + tid, kvh = Grid.IdxY;
        long b = Grid.IdxZ;
        bool active = j < a.Tk;
        long kBase = ((b * a.Tk + j) * a.Hkv + kvh) * d;
        long accBase = (long)tid * d;
        for (int c = 0; c < d; c++)
        {
            dkAcc[accBase + c] = 0f;
            dvAcc[accBase + c] = 0f;
        }
        int group = a.Hq / a.Hkv;
        for (int g = 0; g < group; g++)
        {
            int h = kvh * group + g;
            for (int i0 = 0; i0 < a.Tq; i0 += bq)
            {
                int count = XMath.Min(bq, a.Tq - i0);
                int total = count * d;
                for (int idx = tid; idx < total; idx += bk)
                {
                    int r = idx / d, c = idx % d;
                    long src = ((b * a.Tq + i0 + r) * a.Hq + h) * d + c;
                    qt[idx] = q[src];
                    ot[idx] = dO[src];
                }
                Group.Barrier();
                if (active)
                {
                    for (int r = 0; r < count; r++)
                    {
                        int i = i0 + r;
                        if (!IsVisible(a, h, i, j)) continue;
                        long rowIndex = (b * a.Hq + h) * a.Tq + i;
                        float s = 0f, dp = 0f;
                        for (int c = 0; c < d; c++)
                        {
                            s += qt[(long)r * d + c] * k[kBase + c];
                            dp += ot[(long)r * d + c] * v[kBase + c];
                        }
                        float pr = XMath.Exp(s * a.Scale - lse[rowIndex]);
                        float ds = pr * (dp - delta[rowIndex]) * a.Scale;
                        for (int c = 0; c < d; c++)
                        {
                            dvAcc[accBase + c] += pr * ot[(long)r * d + c];
                            dkAcc[accBase + c] += ds * qt[(long)r * d + c];
                        }
                    }
                }
                Group.Barrier();
            }
        }
        if (!active) return;
        for (int c = 0; c < d; c++)
        {
            if (hasDk != 0) dk[kBase + c] += dkAcc[accBase + c];
            if (hasDv != 0) dv[kBase + c] += dvAcc[accBase + c];
        }
    }
}
