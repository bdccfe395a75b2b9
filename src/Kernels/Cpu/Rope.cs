using System.Runtime.Intrinsics;

namespace UioLlm.Kernels.Cpu;

public sealed unsafe partial class CpuKernels
{
    /// <summary>Elements below which RoPE stays on the calling thread.</summary>
    private const int RopeParallelElements = 1 << 15;

    /// <summary>Per-thread cos / sin rows for the token being rotated (grown on demand, never shrunk).</summary>
    [ThreadStatic] private static float[]? ropeCos, ropeSin;

    public void Rope(Tensor x, Tensor y, ReadOnlySpan<int> positions, RopeTable table)
    {
        const string op = "Rope";
        var shape = CheckRope(op, x, "x", positions, table);
        OpsCheck.On(op, x.Accelerator, y, "y");
        Guard.SameShape(op, x, "x", y, "y");
        OpsCheck.SameOrDisjoint(op, x, "x", y, "y");
        RunRope(shape, x.Pointer, y.Pointer, positions, table, backward: false);
    }

    public void RopeBackward(Tensor dy, Tensor dx, ReadOnlySpan<int> positions, RopeTable table)
    {
        const string op = "RopeBackward";
        var shape = CheckRope(op, dy, "dy", positions, table);
        OpsCheck.On(op, dy.Accelerator, dx, "dx");
        Guard.SameShape(op, dy, "dy", dx, "dx");
        OpsCheck.Disjoint(op, dy, "dy", dx, "dx");
        RunRope(shape, dy.Pointer, dx.Pointer, positions, table, backward: true);
    }

    /// <summary>Batch B, tokens per batch T, heads H, head size D; positions has T or B*T entries.</summary>
    internal readonly record struct RopeShape(int Batch, int Tokens, int Heads, int HeadDim, bool SharedPositions);

    internal static RopeShape CheckRope(string op, Tensor x, string name, ReadOnlySpan<int> positions, RopeTable table, bool host = true)
    {
        OpsCheck.First(op, x, name, host);
        if (table is null) throw new ArgumentNullException(nameof(table), $"{op}: table is null");
        if (x.Rank is not (3 or 4))
            throw new ArgumentException($"{op}: {name} has shape {x.ShapeString}, expected [T, H, D] or [B, T, H, D]", name);
        int b = x.Rank == 4 ? x.Dim(0) : 1, t = x.Dim(-3), h = x.Dim(-2), d = x.Dim(-1);
        if (d != table.HeadDim)
            throw new ArgumentException($"{op}: {name} has shape {x.ShapeString} (D = {d}) but table covers head dimension {table.HeadDim}", nameof(table));
        bool shared = positions.Length == t && b > 1;
        if (positions.Length != b * t && !shared)
            throw new ArgumentException(
                $"{op}: positions has {positions.Length} entries, expected {t}" + (b > 1 ? $" or {b * t}" : "") + $" for {name} {x.ShapeString}", nameof(positions));
        for (int i = 0; i < positions.Length; i++)
            if (positions[i] < 0)
                throw new ArgumentOutOfRangeException(nameof(positions), positions[i], $"{op}: positions[{i}] = {positions[i]} is negative");
        return new RopeShape(b, t, h, d, shared);
    }

    /// <summary>Positions below which a table's cos / sin rows are kept (computed once per table and direction).</summary>
    private const int RopeCachedPositions = 1 << 16;

    /// <summary>Per table: the cos / sin rows of positions [0, n) for the forward (index 0) and inverse (1) rotation.</summary>
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<RopeTable, RopeAngles?[]> ropeAngles = new();

    /// <summary>cos and sin rows (<see cref="Width"/> floats per position) of positions [0, <see cref="Positions"/>).</summary>
    private sealed class RopeAngles(int positions, int width)
    {
        public readonly int Positions = positions, Width = width;
        public readonly float[] Cos = new float[positions * width], Sin = new float[positions * width];
    }

    private void RunRope(RopeShape s, float* src, float* dst, ReadOnlySpan<int> positions, RopeTable table, bool backward)
    {
        int count = positions.Length, maxPosition = 0;
        foreach (int p in positions) maxPosition = Math.Max(maxPosition, p);
        var angles = maxPosition < RopeCachedPositions ? AnglesFor(table, backward, maxPosition + 1) : null;
        fixed (int* pos = positions)
        fixed (float* cos = angles?.Cos, sin = angles?.Sin)
        {
            var rows = new RopeRows(cos, sin, angles?.Width ?? 0);
            if ((long)s.Batch * s.Tokens * s.Heads * s.HeadDim < RopeParallelElements || count < 2)
                RopePositions(s, src, dst, pos, 0, count, table, backward, rows);
            else
                RopeParallel(s, src, dst, pos, count, table, backward, rows);
        }
    }

    /// <summary>The kept rows of a table (cos / sin per position), or none (Width 0): then angles are computed per position.</summary>
    private readonly struct RopeRows(float* cos, float* sin, int width)
    {
        public readonly float* Cos = cos, Sin = sin;
        public readonly int Width = width;
    }

    /// <summary>The table's rows for at least <paramref name="positions"/> positions, built (grown by doubling) on demand.</summary>
    private static RopeAngles AnglesFor(RopeTable table, bool backward, int positions)
    {
        var slots = ropeAngles.GetValue(table, _ => new RopeAngles?[2]);
        int which = backward ? 1 : 0;
        var current = Volatile.Read(ref slots[which]);
        if (current is not null && current.Positions >= positions) return current;
        lock (slots)
        {
            current = slots[which];
            if (current is not null && current.Positions >= positions) return current;
            bool interleaved = table.Layout == RopeLayout.Interleaved;
            int width = interleaved ? table.HeadDim : table.HeadDim / 2;
            int n = Math.Min(RopeCachedPositions, Math.Max(positions, Math.Max(256, (current?.Positions ?? 0) * 2)));
            var built = new RopeAngles(n, width);
            fixed (float* cos = built.Cos, sin = built.Sin)
                for (int p = 0; p < n; p++)
                    FillRopeAngles(p, table, cos + (nint)p * width, sin + (nint)p * width, interleaved, backward ? -1f : 1f);
            Volatile.Write(ref slots[which], built);
            return built;
        }
    }

    private void RopeParallel(RopeShape s, float* src, float* dst, int* pos, int count, RopeTable table, bool backward, RopeRows rows) =>
        OpsParallel.Ranges(Threads, count, (p0, n) => RopePositions(s, src, dst, pos, p0, n, table, backward, rows));

    /// <summary>Rotate every row that uses positions[p0 .. p0+n): kept cos / sin rows, or one trig evaluation per position entry.</summary>
    private static void RopePositions(RopeShape s, float* src, float* dst, int* pos, int p0, int n, RopeTable table, bool backward, RopeRows kept)
    {
        bool interleaved = table.Layout == RopeLayout.Interleaved;
        int half = s.HeadDim / 2, width = interleaved ? s.HeadDim : half;
        if (ropeCos is null || ropeCos.Length < width)
        {
            ropeCos = new float[width];
            ropeSin = new float[width];
        }
        fixed (float* ownCos = ropeCos, ownSin = ropeSin)
        {
            int rowLength = s.Heads * s.HeadDim;
            int rowsPerPosition = s.SharedPositions ? s.Batch : 1;
            for (int p = p0; p < p0 + n; p++)
            {
                float* cos = ownCos, sin = ownSin;
                if (kept.Width > 0)
                {
                    cos = kept.Cos + (nint)pos[p] * kept.Width;
                    sin = kept.Sin + (nint)pos[p] * kept.Width;
                }
                else FillRopeAngles(pos[p], table, cos, sin, interleaved, backward ? -1f : 1f);
                for (int b = 0; b < rowsPerPosition; b++)
                {
                    // Shared positions: entry p serves token p of every batch element.
                    long row = s.SharedPositions ? (long)b * s.Tokens + p : p;
                    float* from = src + row * rowLength, to = dst + row * rowLength;
                    RotateHeads(from, to, cos, sin, s.Heads, s.HeadDim, interleaved, accumulate: backward);
                }
            }
        }
    }

    /// <summary>
    /// cos and sin of position * inverse frequency, computed in double and scaled by the attention factor.
    /// Interleaved layout stores each pair's values twice (lanes 2i, 2i+1) with sin signed (-s, +s), so the
    /// rotation is x * cos + swap_pairs(x) * sin. <paramref name="sign"/> -1 gives the inverse rotation.
    /// </summary>
    private static void FillRopeAngles(int position, RopeTable table, float* cos, float* sin, bool interleaved, float sign)
    {
        var inv = table.InverseFrequency;
        double factor = table.AttentionFactor;
        for (int i = 0; i < inv.Length; i++)
        {
            var (sa, ca) = Math.SinCos(position * inv[i]);
            float c = (float)(ca * factor), sn = (float)(sa * factor) * sign;
            if (interleaved)
            {
                cos[2 * i] = c;
                cos[2 * i + 1] = c;
                sin[2 * i] = -sn;
                sin[2 * i + 1] = sn;
            }
            else
            {
                cos[i] = c;
                sin[i] = sn;
            }
        }
    }

    private static void RotateHeads(float* src, float* dst, float* cos, float* sin, int heads, int d, bool interleaved, bool accumulate)
    {
        switch (VectorMath.Width)
        {
            case 512: RotateHeadsLoop<Lanes512, Vector512<float>>(src, dst, cos, sin, heads, d, interleaved, accumulate); break;
            case 256: RotateHeadsLoop<Lanes256, Vector256<float>>(src, dst, cos, sin, heads, d, interleaved, accumulate); break;
            default: RotateHeadsLoop<Lanes128, Vector128<float>>(src, dst, cos, sin, heads, d, interleaved, accumulate); break;
        }
    }

    /// <summary>
    /// Rotate each head's pairs: (a, b) -> (a c - b s, b c + a s). Half-split pairs are (i, i + D/2);
    /// interleaved pairs (2i, 2i+1). With <paramref name="accumulate"/> the result is added to dst.
    /// Every element is loaded before its slot is stored, so dst may be src.
    /// </summary>
    private static void RotateHeadsLoop<S, TV>(float* src, float* dst, float* cos, float* sin, int heads, int d, bool interleaved, bool accumulate)
        where S : ISimdLanes<TV> where TV : struct
    {
        int w = S.Count, half = d / 2;
        for (int h = 0; h < heads; h++)
        {
            float* x = src + (long)h * d, y = dst + (long)h * d;
            int i = 0;
            if (interleaved)
            {
                for (; i <= d - w; i += w)
                {
                    var v = S.Load(x + i);
                    var r = S.MulAdd(S.SwapPairs(v), S.Load(sin + i), S.Mul(v, S.Load(cos + i)));
                    S.Store(accumulate ? S.Add(r, S.Load(y + i)) : r, y + i);
                }
                for (; i < d; i += 2)
                {
                    float a = x[i], b = x[i + 1];
                    float ra = a * cos[i] + b * sin[i], rb = b * cos[i + 1] + a * sin[i + 1];
                    if (accumulate) { y[i] += ra; y[i + 1] += rb; }
                    else { y[i] = ra; y[i + 1] = rb; }
                }
            }
            else
            {
                for (; i <= half - w; i += w)
                {
                    TV a = S.Load(x + i), b = S.Load(x + half + i), c = S.Load(cos + i), sn = S.Load(sin + i);
                    TV ra = S.Sub(S.Mul(a, c), S.Mul(b, sn)), rb = S.MulAdd(a, sn, S.Mul(b, c));
                    if (accumulate)
                    {
                        ra = S.Add(ra, S.Load(y + i));
                        rb = S.Add(rb, S.Load(y + half + i));
                    }
                    S.Store(ra, y + i);
                    S.Store(rb, y + half + i);
                }
                for (; i < half; i++)
                {
                    float a = x[i], b = x[half + i];
                    float ra = a * cos[i] - b * sin[i], rb = b * cos[i] + a * sin[i];
                    if (accumulate) { y[i] += ra; y[half + i] += rb; }
                    else { y[i] = ra; y[half + i] = rb; }
                }
            }
        }
    }
}
