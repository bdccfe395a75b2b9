using System.Runtime.Intrinsics;
using UioLlm.Kernels.Cpu.FlashAttention;

namespace UioLlm.Kernels.Cpu;

public sealed partial class CpuKernels
{
    /// <summary>Vector width of the attention kernels (tests force each path; Auto picks the widest accelerated one).</summary>
    internal AttentionSimd AttentionVectors { get; init; } = AttentionSimd.Auto;

    /// <summary>Query rows per tile.</summary>
    internal int AttentionQueryTile { get; init; } = 64;

    /// <summary>Keys per tile.</summary>
    internal int AttentionKeyTile { get; init; } = 64;

    /// <summary>Below this many score multiply-adds (B*Hq*Tq*Tk*D) a call runs on the calling thread.</summary>
    internal long AttentionParallelWork { get; init; } = 1L << 20;

    public unsafe void Attention(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionMask mask, float? scale = null)
    {
        const string op = "Attention";
        var shape = AttentionShape.Check(op, q, k, v, lse, mask, scale);
        ArgumentNullException.ThrowIfNull(o);
        Guard.SameShape(op, q, "q", o, "o");
        Guard.On(op, q.Accelerator, o, "o");
        if (shape.Batch * shape.Tq * shape.Hq == 0) return;

        if (shape.Tq <= FlashDecode.MaxQueries)
        {
            var decode = new FlashDecode
            {
                Q = q.Pointer, K = k.Pointer, V = v.Pointer, O = o.Pointer, Lse = lse.Pointer, Mask = mask,
                Batch = shape.Batch, Tq = shape.Tq, Tk = shape.Tk, Hq = shape.Hq, Hkv = shape.Hkv, D = shape.D, Scale = shape.Scale,
            };
            // Decoding is latency-bound: the persistent worker pool wakes in about a microsecond, so even a few
            // thousand multiply-adds per head are worth splitting.
            long work = (long)shape.Batch * shape.Hq * shape.Tq * shape.Tk * shape.D;
            int parts = Threads > 1 && work >= Math.Min(DecodeParallelWork, AttentionParallelWork) ? Math.Min(Threads, decode.Items) : 1;
            var region = DecodeRegion.Current;
            region.Set(decode, ResolveAttentionSimd(), parts);
            UioLlm.Kernels.Cpu.Gemm.WorkerPool.Run(region, parts);
            return;
        }

        var spans = RowSpans.Build(mask, shape.Hq, shape.Tq, shape.Tk);
        try
        {
            var job = new FlashForward
            {
                Q = q.Pointer, K = k.Pointer, V = v.Pointer, O = o.Pointer, Lse = lse.Pointer,
                Batch = shape.Batch, Tq = shape.Tq, Tk = shape.Tk, Hq = shape.Hq, Hkv = shape.Hkv, D = shape.D,
                QueryTile = AttentionQueryTile, KeyTile = AttentionKeyTile, Scale = shape.Scale, Spans = spans,
            };
            bool parallel = UseParallel(shape);
            switch (ResolveAttentionSimd())
            {
                case AttentionSimd.Vector512: ForEach(job.Items, parallel, i => job.Run<Lanes512, Vector512<float>>(i)); break;
                case AttentionSimd.Vector256: ForEach(job.Items, parallel, i => job.Run<Lanes256, Vector256<float>>(i)); break;
                default: ForEach(job.Items, parallel, i => job.Run<Lanes128, Vector128<float>>(i)); break;
            }
        }
        finally
        {
            spans.Release();
        }
    }

    public unsafe void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, AttentionMask mask,
        Tensor? dq, Tensor? dk, Tensor? dv, float? scale = null)
    {
        const string op = "AttentionBackward";
        var shape = AttentionShape.Check(op, q, k, v, lse, mask, scale);
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(dO);
        Guard.SameShape(op, q, "q", o, "o");
        Guard.SameShape(op, q, "q", dO, "dO");
        Guard.On(op, q.Accelerator, o, "o");
        Guard.On(op, q.Accelerator, dO, "dO");
        var inputs = new[] { (q, "q"), (k, "k"), (v, "v"), (o, "o"), (dO, "dO"), (lse, "lse") };
        var grads = new List<(Tensor, string)>(3);
        if (dq is not null) { Guard.SameShape(op, q, "q", dq, "dq"); grads.Add((dq, "dq")); }
        if (dk is not null) { Guard.SameShape(op, k, "k", dk, "dk"); grads.Add((dk, "dk")); }
        if (dv is not null) { Guard.SameShape(op, v, "v", dv, "dv"); grads.Add((dv, "dv")); }
        for (int a = 0; a < grads.Count; a++)
        {
            var (grad, name) = grads[a];
            Guard.On(op, q.Accelerator, grad, name);
            foreach (var (input, inputName) in inputs) ThrowIfOverlapping(op, grad, name, input, inputName);
            for (int b = 0; b < a; b++) ThrowIfOverlapping(op, grad, name, grads[b].Item1, grads[b].Item2);
        }
        if (grads.Count == 0 || shape.Batch * shape.Tq * shape.Hq == 0 || shape.Tk == 0) return;

        int keyTile = AttentionKeyTile;
        int keyBlocks = (shape.Tk + keyTile - 1) / keyTile;
        bool parallel = UseParallel(shape);
        // Split each (batch, kv head) over key segments only when there are fewer of those than threads.
        int owners = shape.Batch * shape.Hkv;
        int segments = parallel && owners < Threads ? Math.Min(keyBlocks, (Threads + owners - 1) / owners) : 1;
        Tensor? partials = null;
        var spans = RowSpans.Build(mask, shape.Hq, shape.Tq, shape.Tk);
        try
        {
            if (dq is not null && segments > 1)
            {
                partials = q.Accelerator.Scratch.Rent([(segments - 1) * q.Length]);
                partials.Span.Clear();
            }
            var job = new FlashBackward
            {
                Q = q.Pointer, K = k.Pointer, V = v.Pointer, O = o.Pointer, DO = dO.Pointer, Lse = lse.Pointer,
                DQ = dq is null ? null : dq.Pointer, DK = dk is null ? null : dk.Pointer, DV = dv is null ? null : dv.Pointer,
                DQPartials = partials is null ? null : partials.Pointer,
                Batch = shape.Batch, Tq = shape.Tq, Tk = shape.Tk, Hq = shape.Hq, Hkv = shape.Hkv, D = shape.D,
                QueryTile = AttentionQueryTile, KeyTile = keyTile, Segments = segments, Scale = shape.Scale, Spans = spans,
            };
            switch (ResolveAttentionSimd())
            {
                case AttentionSimd.Vector512: ForEach(job.Items, parallel, i => job.Run<Lanes512, Vector512<float>>(i)); break;
                case AttentionSimd.Vector256: ForEach(job.Items, parallel, i => job.Run<Lanes256, Vector256<float>>(i)); break;
                default: ForEach(job.Items, parallel, i => job.Run<Lanes128, Vector128<float>>(i)); break;
            }
            if (partials is not null && dq is not null) AddPartials(dq.Pointer, partials.Pointer, q.Length, segments - 1, parallel);
        }
        finally
        {
            partials?.Dispose();
            spans.Release();
        }
    }

    /// <summary>From this many score multiply-adds a decode call is split across the worker pool.</summary>
    internal const long DecodeParallelWork = 32 * 1024;

    /// <summary>One decode-attention call as worker-pool parts: contiguous runs of (batch, head) items.</summary>
    private sealed class DecodeRegion : UioLlm.Kernels.Cpu.Gemm.IParallelWork
    {
        [ThreadStatic] private static DecodeRegion? current;
        private FlashDecode job;
        private AttentionSimd simd;
        private int parts;

        public static DecodeRegion Current => current ??= new DecodeRegion();

        public void Set(in FlashDecode decode, AttentionSimd vectors, int partCount)
        {
            job = decode;
            simd = vectors;
            parts = partCount;
        }

        public void Run(int part)
        {
            int items = job.Items, start = (int)((long)items * part / parts), end = (int)((long)items * (part + 1) / parts);
            for (int i = start; i < end; i++)
            {
                switch (simd)
                {
                    case AttentionSimd.Vector512: job.Run<Lanes512, Vector512<float>>(i); break;
                    case AttentionSimd.Vector256: job.Run<Lanes256, Vector256<float>>(i); break;
                    default: job.Run<Lanes128, Vector128<float>>(i); break;
                }
            }
        }
    }

    private AttentionSimd ResolveAttentionSimd() =>
        AttentionVectors != AttentionSimd.Auto ? AttentionVectors
        : Vector512.IsHardwareAccelerated ? AttentionSimd.Vector512
        : Vector256.IsHardwareAccelerated ? AttentionSimd.Vector256
        : AttentionSimd.Vector128;

    private bool UseParallel(in AttentionShape s) =>
        Threads > 1 && (long)s.Batch * s.Hq * s.Tq * s.Tk * s.D >= AttentionParallelWork;

    private void ForEach(int items, bool parallel, Action<int> body)
    {
        if (parallel && items > 1) ParallelFor(items, body);
        else for (int i = 0; i < items; i++) body(i);
    }

    /// <summary>dq += the sum of the per-segment dQ partials, in parallel over chunks of elements.</summary>
    private unsafe void AddPartials(float* dq, float* partials, int length, int count, bool parallel)
    {
        const int chunk = 1 << 14;
        nint dqAddress = (nint)dq, partialsAddress = (nint)partials;
        ForEach((length + chunk - 1) / chunk, parallel, c =>
        {
            int start = c * chunk, n = Math.Min(chunk, length - start);
            float* dst = (float*)dqAddress + start;
            for (int s = 0; s < count; s++)
            {
                float* src = (float*)partialsAddress + (nint)s * length + start;
                int i = 0;
                for (; i + Vector256<float>.Count <= n; i += Vector256<float>.Count)
                    (Vector256.Load(dst + i) + Vector256.Load(src + i)).Store(dst + i);
                for (; i < n; i++) dst[i] += src[i];
            }
        });
    }

    internal static void ThrowIfOverlapping(string op, Tensor grad, string gradName, Tensor other, string otherName)
    {
        if (!ReferenceEquals(grad.Memory, other.Memory)) return;
        if (grad.Offset < other.Offset + other.Length && other.Offset < grad.Offset + grad.Length)
            throw new ArgumentException($"{op}: gradient {gradName} {grad.ShapeString} overlaps {otherName} {other.ShapeString}; gradient outputs must not alias inputs", gradName);
    }
}

/// <summary>The validated sizes of an attention call.</summary>
internal readonly record struct AttentionShape(int Batch, int Tq, int Tk, int Hq, int Hkv, int D, float Scale)
{
    /// <summary>Check q, k, v, lse, the mask and the scale; every message names the op and the tensor.</summary>
    public static AttentionShape Check(string op, Tensor q, Tensor k, Tensor v, Tensor lse, AttentionMask mask, float? scale, bool host = true)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(lse);
        if (q.Rank != 3 && q.Rank != 4)
            throw new ArgumentException($"{op}: q has shape {q.ShapeString}, expected rank 3 [Tq, Hq, D] or rank 4 [B, Tq, Hq, D]", nameof(q));
        if (host && !q.Memory.IsHostAccessible)
            throw new ArgumentException($"{op}: q {q.ShapeString} is not in host memory ({q.Accelerator.Description}); the CPU kernels need CPU tensors", nameof(q));
        bool batched = q.Rank == 4;
        int batch = batched ? q.Dim(0) : 1;
        int tq = q.Dim(-3), hq = q.Dim(-2), d = q.Dim(-1);
        Guard.Positive(op, hq, "q heads");
        Guard.Positive(op, d, "head dimension of q");
        string kvLayout = batched ? "[B, Tk, Hkv, D]" : "[Tk, Hkv, D]";
        Guard.Rank(op, k, "k", q.Rank, kvLayout);
        int tk = k.Dim(-3), hkv = k.Dim(-2);
        Guard.Shape(op, k, "k", batched ? [batch, tk, hkv, d] : [tk, hkv, d]);
        if (hkv <= 0 || hq % hkv != 0)
            throw new ArgumentException($"{op}: k has shape {k.ShapeString} with {hkv} kv heads, which must be positive and divide the {hq} query heads of q {q.ShapeString}", nameof(k));
        Guard.SameShape(op, k, "k", v, "v");
        Guard.Shape(op, lse, "lse", batched ? [batch, hq, tq] : [hq, tq]);
        Guard.On(op, q.Accelerator, q, "q");
        Guard.On(op, q.Accelerator, k, "k");
        Guard.On(op, q.Accelerator, v, "v");
        Guard.On(op, q.Accelerator, lse, "lse");
        mask.Validate(op, tq, tk);
        if (scale is float s) Guard.Finite(op, s, "scale");
        return new AttentionShape(batch, tq, tk, hq, hkv, d, scale ?? 1f / MathF.Sqrt(d));
    }
}
