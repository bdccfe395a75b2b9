namespace UioLlm.Kernels.Kit;

/// <summary>The outcome of one parity case: the worst error over every output it compares.</summary>
public sealed record ParityResult(string Case, bool Passed, double MaxError, string Detail);

/// <summary>One op (forward or backward) on one shape and mask, run on a reference and a device backend.</summary>
public sealed record ParityCase(string Name, string Op, Action<ParityContext> Body)
{
    public override string ToString() => Name;
}

/// <summary>Runs a case's op on both accelerators from the same seeded inputs and compares the outputs.</summary>
public sealed class ParityContext(Accelerator reference, Accelerator device, string name, int seed)
{
    private readonly Random random = new(seed);
    private readonly List<Tensor> owned = [];
    private double worst;
    private string detail = "";
    private bool failed;

    public Accelerator Reference { get; } = reference;
    public Accelerator Device { get; } = device;

    public float[] Uniform(int n, float lo = -1f, float hi = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * (float)random.NextDouble();
        return a;
    }

    public int[] Ints(int n, int lo, int hiExclusive)
    {
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = random.Next(lo, hiExclusive);
        return a;
    }

    /// <summary>The same values on both backends.</summary>
    public (Tensor Ref, Tensor Dev) Pair(float[] data, params int[] shape)
    {
        var r = Reference.FromArray(data, shape, null);
        var d = Device.FromArray(data, shape, null);
        owned.Add(r);
        owned.Add(d);
        return (r, d);
    }

    public (Tensor Ref, Tensor Dev) Random(params int[] shape)
    {
        int n = 1;
        foreach (int s in shape) n *= s;
        return Pair(Uniform(n), shape);
    }

    /// <summary>Compare a device tensor with the reference one: |dev - ref| &lt;= atol + rtol |ref| everywhere (NaN fails; equal infinities pass).</summary>
    public void Compare(string what, (Tensor Ref, Tensor Dev) t, double atol = 1e-4, double rtol = 1e-4)
    {
        Device.Synchronize();
        Compare(what, t.Ref.ToArray(), t.Dev.ToArray(), atol, rtol);
    }

    public void Compare(string what, float[] expected, float[] actual, double atol = 1e-4, double rtol = 1e-4)
    {
        if (expected.Length != actual.Length)
        {
            Fail($"{what}: {actual.Length} elements, expected {expected.Length}");
            return;
        }
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (double.IsInfinity(e) && e == a) continue;
            double err = Math.Abs(a - e);
            if (double.IsNaN(err) || err > atol + rtol * Math.Abs(e))
            {
                Fail($"{what}[{i}] = {a:G7}, expected {e:G7} (|err| {err:G3} > {atol + rtol * Math.Abs(e):G3})");
                return;
            }
            worst = Math.Max(worst, err);
        }
    }

    public void CompareScalar(string what, float expected, float actual, double atol = 1e-4, double rtol = 1e-4) =>
        Compare(what, [expected], [actual], atol, rtol);

    private void Fail(string message)
    {
        if (failed) return;
        failed = true;
        detail = message;
    }

    internal ParityResult Finish()
    {
        foreach (var t in owned) t.Dispose();
        owned.Clear();
        return new ParityResult(name, !failed, worst, failed ? detail : $"max |err| {worst:G3}");
    }
}

/// <summary>Which list of shapes: the full suite for a real GPU, or tiny shapes for ILGPU's CPU accelerator (a simulated GPU, slow).</summary>
public enum ParitySize
{
    /// <summary>Shapes that do not divide the tile sizes, up to a few hundred rows; for CUDA (the GPU runner) and CPU-against-CPU.</summary>
    Full,
    /// <summary>The same ops, transposes, masks and head layouts on shapes of one or two groups with ragged edges (CI on the CPU accelerator).</summary>
    Tiny,
}

/// <summary>
/// The kernel parity suite, the one list of cases per op: every op of <see cref="IKernels"/>, forward and backward,
/// on shapes that do not divide the tile sizes, batched and grouped-query cases and every mask kind, compared against
/// the CPU kernels. Read by the xunit suite (CPU against CPU, ILGPU's CPU accelerator against CPU), the GPU runner,
/// and `uio kernels --op X --check`.
/// </summary>
public static class KernelParity
{
    public static IReadOnlyList<ParityCase> Cases { get; } = Build(ParitySize.Full);

    /// <summary>The tiny-shape list for ILGPU's CPU accelerator (every op, transpose case, mask kind and head layout).</summary>
    public static IReadOnlyList<ParityCase> TinyCases { get; } = Build(ParitySize.Tiny);

    public static IReadOnlyList<ParityCase> For(ParitySize size) => size == ParitySize.Tiny ? TinyCases : Cases;

    /// <summary>Run one case; an exception becomes a failed result naming it.</summary>
    public static ParityResult Run(ParityCase c, Accelerator reference, Accelerator device, int seed = 1234)
    {
        var ctx = new ParityContext(reference, device, c.Name, seed + c.Name.Length * 7919 + StableHash(c.Name));
        try
        {
            c.Body(ctx);
            return ctx.Finish();
        }
        catch (Exception e)
        {
            ctx.Finish();
            return new ParityResult(c.Name, false, double.NaN, $"{e.GetType().Name}: {e.Message}");
        }
    }

    private static int StableHash(string s)
    {
        int h = 17;
        foreach (char ch in s) h = unchecked(h * 31 + ch);
        return h & 0x7fffffff;
    }

    private static List<ParityCase> Build(ParitySize size)
    {
        bool tiny = size == ParitySize.Tiny;
        var list = new List<ParityCase>();
        void Add(string op, string name, Action<ParityContext> body) =>
            list.Add(new ParityCase($"{op} {name}", op, body));

        // ------------------------------------------------------------------ GEMM
        foreach (var (m, n, k) in tiny ? new[] { (1, 1, 1), (7, 13, 5), (20, 17, 33) } : new[] { (1, 1, 1), (7, 13, 5), (64, 64, 64), (130, 67, 259), (257, 300, 129), (1, 512, 288) })
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, 0.25f) })
                        Add("MatMul", $"{m}x{n}x{k} {(ta ? "T" : "N")}{(tb ? "T" : "N")} alpha={alpha} beta={beta}", c =>
                        {
                            var a = c.Random(ta ? [k, m] : [m, k]);
                            var b = c.Random(tb ? [n, k] : [k, n]);
                            var o = c.Random(m, n);
                            c.Reference.Kernels.MatMul(a.Ref, b.Ref, o.Ref, ta, tb, alpha, beta);
                            c.Device.Kernels.MatMul(a.Dev, b.Dev, o.Dev, ta, tb, alpha, beta);
                            c.Compare("c", o, 1e-4 * Math.Sqrt(k), 1e-4);
                        });
        foreach (bool tb in new[] { false, true })
        {
            int bm1 = tiny ? 7 : 37, bn1 = tiny ? 9 : 41, bk1 = tiny ? 5 : 19;
            Add("MatMul", $"batched 3x{bm1}x{bn1}x{bk1} rank3*rank3 {(tb ? "NT" : "NN")}", c =>
            {
                int bm = bm1, bn = bn1, bk = bk1;
                var a = c.Random(3, bm, bk);
                var b = c.Random(tb ? [3, bn, bk] : [3, bk, bn]);
                var o = c.Random(3, bm, bn);
                c.Reference.Kernels.MatMul(a.Ref, b.Ref, o.Ref, false, tb);
                c.Device.Kernels.MatMul(a.Dev, b.Dev, o.Dev, false, tb);
                c.Compare("c", o);
            });
            Add("MatMul", $"batched rank3 x broadcast rank2 {(tb ? "NT" : "NN")}", c =>
            {
                int bm = tiny ? 6 : 33, bn = tiny ? 11 : 45, bk = tiny ? 18 : 70;
                var a = c.Random(2, bm, bk);
                var b = c.Random(tb ? [bn, bk] : [bk, bn]);
                var o = c.Random(2, bm, bn);
                c.Reference.Kernels.MatMul(a.Ref, b.Ref, o.Ref, false, tb);
                c.Device.Kernels.MatMul(a.Dev, b.Dev, o.Dev, false, tb);
                c.Compare("c", o);
            });
            Add("MatMul", $"broadcast rank2 x batched rank3 T{(tb ? "T" : "N")}", c =>
            {
                int bm = tiny ? 5 : 17, bn = tiny ? 7 : 23, bk = tiny ? 9 : 29;
                var a = c.Random(bk, bm);
                var b = c.Random(tb ? [4, bn, bk] : [4, bk, bn]);
                var o = c.Random(4, bm, bn);
                c.Reference.Kernels.MatMul(a.Ref, b.Ref, o.Ref, true, tb);
                c.Device.Kernels.MatMul(a.Dev, b.Dev, o.Dev, true, tb);
                c.Compare("c", o);
            });
        }
        Add("MatMulStrided", tiny ? "per-head blocks side by side (T=9, H=2, D=5)" : "per-head blocks side by side (T=45, H=3, D=20)", c =>
        {
            int t = tiny ? 9 : 45, h = tiny ? 2 : 3, d = tiny ? 5 : 20;
            var q = c.Random(t, h, d);
            var kk = c.Random(t, h, d);
            var s = c.Random(h, t, t);
            var lq = new MatrixLayout(0, h * d, d);
            var ls = new MatrixLayout(0, t, t * t);
            c.Reference.Kernels.MatMulStrided(q.Ref, lq, false, kk.Ref, lq, true, s.Ref, ls, t, t, d, h, 0.5f, 0f);
            c.Device.Kernels.MatMulStrided(q.Dev, lq, false, kk.Dev, lq, true, s.Dev, ls, t, t, d, h, 0.5f, 0f);
            c.Compare("s", s);
            var o = c.Random(t, h, d);
            c.Reference.Kernels.MatMulStrided(s.Ref, ls, false, kk.Ref, lq, false, o.Ref, lq, t, d, t, h, 1f, 1f);
            c.Device.Kernels.MatMulStrided(s.Dev, ls, false, kk.Dev, lq, false, o.Dev, lq, t, d, t, h, 1f, 1f);
            c.Compare("o", o);
        });
        foreach (var (ta, tb) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            Add("MatMulBackward", $"rank2 {(tiny ? "9x7x5" : "67x45x33")} {(ta ? "T" : "N")}{(tb ? "T" : "N")}", c =>
            {
                int m = tiny ? 9 : 67, n = tiny ? 7 : 45, k = tiny ? 5 : 33;
                var a = c.Random(ta ? [k, m] : [m, k]);
                var b = c.Random(tb ? [n, k] : [k, n]);
                var dc = c.Random(m, n);
                var da = c.Random(ta ? [k, m] : [m, k]);
                var db = c.Random(tb ? [n, k] : [k, n]);
                c.Reference.Kernels.MatMulBackward(a.Ref, b.Ref, dc.Ref, da.Ref, db.Ref, ta, tb);
                c.Device.Kernels.MatMulBackward(a.Dev, b.Dev, dc.Dev, da.Dev, db.Dev, ta, tb);
                c.Compare("da", da);
                c.Compare("db", db);
            });
            Add("MatMulBackward", $"rank3 x broadcast weight {(ta ? "T" : "N")}{(tb ? "T" : "N")}", c =>
            {
                int bt = 3, m = tiny ? 5 : 21, n = tiny ? 6 : 19, k = tiny ? 7 : 35;
                var a = c.Random(ta ? [bt, k, m] : [bt, m, k]);
                var b = c.Random(tb ? [n, k] : [k, n]);
                var dc = c.Random(bt, m, n);
                var da = c.Random(ta ? [bt, k, m] : [bt, m, k]);
                var db = c.Random(tb ? [n, k] : [k, n]);
                c.Reference.Kernels.MatMulBackward(a.Ref, b.Ref, dc.Ref, da.Ref, db.Ref, ta, tb);
                c.Device.Kernels.MatMulBackward(a.Dev, b.Dev, dc.Dev, da.Dev, db.Dev, ta, tb);
                c.Compare("da", da);
                c.Compare("db", db);
            });
        }

        // ------------------------------------------------------------------ LoRA
        foreach (var (t, din, dout, r) in tiny ? new[] { (5, 12, 9, 3), (2 * 3, 8, 18, 2) } : new[] { (37, 288, 288, 16), (5, 70, 33, 3), (2 * 33, 96, 130, 8) })
        {
            Add("LoraMatMul", $"T={t} in={din} out={dout} r={r}", c =>
            {
                var x = c.Random(t, din); var w = c.Random(dout, din); var la = c.Random(r, din); var lb = c.Random(dout, r);
                var y = c.Random(t, dout); var xa = c.Random(t, r);
                c.Reference.Kernels.LoraMatMul(x.Ref, w.Ref, la.Ref, lb.Ref, 2f, y.Ref, xa.Ref);
                c.Device.Kernels.LoraMatMul(x.Dev, w.Dev, la.Dev, lb.Dev, 2f, y.Dev, xa.Dev);
                c.Compare("y", y, 1e-3);
                c.Compare("xa", xa, 1e-3);
            });
            Add("LoraMatMulBackward", $"T={t} in={din} out={dout} r={r}", c =>
            {
                var x = c.Random(t, din); var w = c.Random(dout, din); var la = c.Random(r, din); var lb = c.Random(dout, r);
                var xa = c.Random(t, r); var dy = c.Random(t, dout);
                var dx = c.Random(t, din); var dA = c.Random(r, din); var dB = c.Random(dout, r);
                c.Reference.Kernels.LoraMatMulBackward(x.Ref, w.Ref, la.Ref, lb.Ref, 0.5f, xa.Ref, dy.Ref, dx.Ref, dA.Ref, dB.Ref);
                c.Device.Kernels.LoraMatMulBackward(x.Dev, w.Dev, la.Dev, lb.Dev, 0.5f, xa.Dev, dy.Dev, dx.Dev, dA.Dev, dB.Dev);
                c.Compare("dx", dx, 1e-3);
                c.Compare("dA", dA, 1e-3);
                c.Compare("dB", dB, 1e-3);
            });
        }

        // ------------------------------------------------------------------ RoPE
        foreach (var layout in new[] { RopeLayout.HalfSplit, RopeLayout.Interleaved })
            foreach (var scaling in new[] { RopeScalingKind.None, RopeScalingKind.Yarn })
                foreach (bool batched in new[] { false, true })
                {
                    int rt = tiny ? 5 : 37, rh = tiny ? 2 : 3, rd = tiny ? 8 : 48;
                    string name = $"{layout} {scaling} {(batched ? "B=2 shared positions" : $"T={rt}")}";
                    RopeTable Table() => RopeTable.Create(rd, 10000, scaling == RopeScalingKind.None ? null : new RopeScaling(scaling, 4, 512), layout);
                    int[] shape = batched ? [2, rt, rh, rd] : [rt, rh, rd];
                    Add("Rope", name, c =>
                    {
                        var pos = c.Ints(rt, 0, 5000);
                        var x = c.Random(shape); var y = c.Random(shape);
                        c.Reference.Kernels.Rope(x.Ref, y.Ref, pos, Table());
                        c.Device.Kernels.Rope(x.Dev, y.Dev, pos, Table());
                        c.Compare("y", y, 1e-5);
                        c.Reference.Kernels.Rope(x.Ref, x.Ref, pos, Table());   // in place
                        c.Device.Kernels.Rope(x.Dev, x.Dev, pos, Table());
                        c.Compare("x (in place)", x, 1e-5);
                    });
                    Add("RopeBackward", name, c =>
                    {
                        var pos = c.Ints(batched ? 2 * rt : rt, 0, 5000);
                        var dy = c.Random(shape); var dx = c.Random(shape);
                        c.Reference.Kernels.RopeBackward(dy.Ref, dx.Ref, pos, Table());
                        c.Device.Kernels.RopeBackward(dy.Dev, dx.Dev, pos, Table());
                        c.Compare("dx", dx, 1e-5);
                    });
                }

        // ------------------------------------------------------------------ attention
        var masks = tiny ? new (string Name, AttentionMask Mask, int Tq, int Tk)[]
        {
            ("none", AttentionMask.None, 5, 9),
            ("causal", AttentionMask.CausalMask(), 9, 9),
            ("causal prefix 3 bottom-right", AttentionMask.CausalMask(3), 6, 3 + 8),
            ("window 4 sinks 2", AttentionMask.SlidingWindow(4, 2), 12, 12),
            ("window 3 sinks 1 prefix 2", AttentionMask.SlidingWindow(3, 1, 2), 7, 9),
            ("step expansion n=2 stride 3", AttentionMask.StepExpansion(2, 3), 8, 8),
            ("step expansion prefix 2", AttentionMask.StepExpansion(2, 4, 2), 10, 12),
            ("step expansion window 2", AttentionMask.StepExpansion(2, 3, window: 2), 8, 8),
            ("step expansion memory-causal prefix 2", AttentionMask.StepExpansion(3, 2, 2, memoryCausal: true), 9, 11),
            ("step expansion window 2 spanning prefix 3", AttentionMask.StepExpansion(3, 2, 3, window: 2, memoryCausal: true, windowSpansPrefix: true), 9, 12),
            ("block diagonal 4 shifted", AttentionMask.BlockDiagonal(4, causal: true, shiftUpperHalfHeads: true), 9, 9),
            ("block diagonal 5 non-causal", AttentionMask.BlockDiagonal(5, causal: false), 10, 10),
            ("decode 1 query causal", AttentionMask.CausalMask(), 1, 13),
            ("decode 3 queries prefix", AttentionMask.CausalMask(2), 3, 10),
        } : new (string Name, AttentionMask Mask, int Tq, int Tk)[]
        {
            ("none", AttentionMask.None, 37, 70),
            ("causal", AttentionMask.CausalMask(), 70, 70),
            ("causal prefix 13 bottom-right", AttentionMask.CausalMask(13), 45, 13 + 59),
            ("window 16 sinks 4", AttentionMask.SlidingWindow(16, 4), 100, 100),
            ("window 9 sinks 2 prefix 5", AttentionMask.SlidingWindow(9, 2, 5), 50, 60),
            ("step expansion n=8 stride 8", AttentionMask.StepExpansion(8, 8), 72, 72),
            ("step expansion prefix 10", AttentionMask.StepExpansion(4, 16, 10), 68, 78),
            ("step expansion window 6", AttentionMask.StepExpansion(4, 8, window: 6), 36, 36),
            ("step expansion window 6 spanning prefix 12", AttentionMask.StepExpansion(4, 8, 12, window: 6, memoryCausal: true, windowSpansPrefix: true), 36, 48),
            ("block diagonal 16 shifted", AttentionMask.BlockDiagonal(16, causal: true, shiftUpperHalfHeads: true), 67, 67),
            ("block diagonal 20 non-causal", AttentionMask.BlockDiagonal(20, causal: false), 50, 50),
            ("decode 1 query causal", AttentionMask.CausalMask(), 1, 77),
            ("decode 3 queries prefix", AttentionMask.CausalMask(8), 3, 40),
        };
        var heads = tiny ? new (int B, int Hq, int Hkv, int D)[] { (1, 2, 2, 8), (2, 2, 1, 16), (1, 4, 2, 40), (1, 1, 1, 256), (1, 3, 3, 5) }
            : new (int B, int Hq, int Hkv, int D)[] { (1, 4, 4, 48), (2, 4, 2, 64), (1, 6, 2, 100), (1, 2, 1, 128), (1, 2, 2, 256), (1, 3, 3, 17) };
        foreach (var (maskName, mask, tq, tk) in masks)
            foreach (var (b, hq, hkv, d) in heads)
            {
                if (d == 256 && maskName != "causal") continue;   // the widest variant: one mask is enough
                string name = $"{maskName} Tq={tq} Tk={tk} B={b} Hq={hq} Hkv={hkv} D={d}";
                int[] qs = b > 1 ? [b, tq, hq, d] : [tq, hq, d];
                int[] ks = b > 1 ? [b, tk, hkv, d] : [tk, hkv, d];
                int[] ls = b > 1 ? [b, hq, tq] : [hq, tq];
                Add("Attention", name, c =>
                {
                    var q = c.Random(qs); var k = c.Random(ks); var v = c.Random(ks);
                    var o = c.Random(qs); var lse = c.Random(ls);
                    c.Reference.Kernels.Attention(q.Ref, k.Ref, v.Ref, o.Ref, lse.Ref, mask);
                    c.Device.Kernels.Attention(q.Dev, k.Dev, v.Dev, o.Dev, lse.Dev, mask);
                    c.Compare("o", o, 2e-4, 1e-3);
                    c.Compare("lse", lse, 2e-4, 1e-4);
                });
                Add("AttentionBackward", name, c =>
                {
                    var q = c.Random(qs); var k = c.Random(ks); var v = c.Random(ks);
                    var o = c.Random(qs); var lse = c.Random(ls); var dO = c.Random(qs);
                    c.Reference.Kernels.Attention(q.Ref, k.Ref, v.Ref, o.Ref, lse.Ref, mask);
                    c.Device.Kernels.Attention(q.Dev, k.Dev, v.Dev, o.Dev, lse.Dev, mask);
                    var dq = c.Random(qs); var dk = c.Random(ks); var dv = c.Random(ks);
                    c.Reference.Kernels.AttentionBackward(q.Ref, k.Ref, v.Ref, o.Ref, dO.Ref, lse.Ref, mask, dq.Ref, dk.Ref, dv.Ref);
                    c.Device.Kernels.AttentionBackward(q.Dev, k.Dev, v.Dev, o.Dev, dO.Dev, lse.Dev, mask, dq.Dev, dk.Dev, dv.Dev);
                    c.Compare("dq", dq, 5e-4, 1e-3);
                    c.Compare("dk", dk, 5e-4, 1e-3);
                    c.Compare("dv", dv, 5e-4, 1e-3);
                });
            }

        // ------------------------------------------------------------------ norms, activations
        foreach (var (rows, d) in tiny ? new[] { (1, 7), (5, 33), (3, 300) } : new[] { (1, 7), (37, 288), (130, 1000), (3, 4097) })
        {
            Add("RmsNorm", $"{rows}x{d}", c =>
            {
                var x = c.Random(rows, d); var w = c.Random(d); var y = c.Random(rows, d); var r = c.Random(rows);
                c.Reference.Kernels.RmsNorm(x.Ref, w.Ref, y.Ref, r.Ref, 1e-5f);
                c.Device.Kernels.RmsNorm(x.Dev, w.Dev, y.Dev, r.Dev, 1e-5f);
                c.Compare("y", y, 1e-5);
                c.Compare("rstd", r, 1e-5);
            });
            Add("RmsNormBackward", $"{rows}x{d}", c =>
            {
                var x = c.Random(rows, d); var w = c.Random(d); var y = c.Random(rows, d); var r = c.Random(rows);
                c.Reference.Kernels.RmsNorm(x.Ref, w.Ref, y.Ref, r.Ref, 1e-5f);
                c.Device.Kernels.RmsNorm(x.Dev, w.Dev, y.Dev, r.Dev, 1e-5f);
                var dy = c.Random(rows, d); var dx = c.Random(rows, d); var dw = c.Random(d);
                c.Reference.Kernels.RmsNormBackward(x.Ref, w.Ref, r.Ref, dy.Ref, dx.Ref, dw.Ref);
                c.Device.Kernels.RmsNormBackward(x.Dev, w.Dev, r.Dev, dy.Dev, dx.Dev, dw.Dev);
                c.Compare("dx", dx, 1e-4, 1e-4);
                c.Compare("dWeight", dw, 1e-4 * Math.Sqrt(rows), 1e-4);
            });
        }
        foreach (int n in tiny ? new[] { 1, 37, 1000 } : new[] { 1, 1000, 37 * 768 + 5 })
        {
            Add("SwiGlu", $"n={n}", c =>
            {
                var g = c.Pair(c.Uniform(n, -6, 6), n); var u = c.Random(n); var h = c.Random(n);
                c.Reference.Kernels.SwiGlu(g.Ref, u.Ref, h.Ref);
                c.Device.Kernels.SwiGlu(g.Dev, u.Dev, h.Dev);
                c.Compare("h", h, 1e-5);
            });
            Add("SwiGluBackward", $"n={n}", c =>
            {
                var g = c.Pair(c.Uniform(n, -6, 6), n); var u = c.Random(n); var dh = c.Random(n);
                var dg = c.Random(n); var du = c.Random(n);
                c.Reference.Kernels.SwiGluBackward(g.Ref, u.Ref, dh.Ref, dg.Ref, du.Ref);
                c.Device.Kernels.SwiGluBackward(g.Dev, u.Dev, dh.Dev, dg.Dev, du.Dev);
                c.Compare("dGate", dg, 1e-5);
                c.Compare("dUp", du, 1e-5);
            });
        }

        foreach (int n in tiny ? new[] { 1, 77 } : new[] { 1, 1000, 37 * 768 + 5 })
        {
            Add("Softcap", $"n={n} cap=30", c =>
            {
                var x = c.Pair(c.Uniform(n, -100, 100), n); var y = c.Random(n);
                c.Reference.Kernels.Softcap(x.Ref, 30f, y.Ref);
                c.Device.Kernels.Softcap(x.Dev, 30f, y.Dev);
                c.Compare("y", y, 1e-5, 1e-5);
                c.Reference.Kernels.Softcap(x.Ref, 30f, x.Ref);   // in place
                c.Device.Kernels.Softcap(x.Dev, 30f, x.Dev);
                c.Compare("x (in place)", x, 1e-5, 1e-5);
            });
            Add("SoftcapBackward", $"n={n} cap=30", c =>
            {
                var x = c.Pair(c.Uniform(n, -100, 100), n); var dy = c.Random(n); var dx = c.Random(n);
                c.Reference.Kernels.SoftcapBackward(x.Ref, 30f, dy.Ref, dx.Ref);
                c.Device.Kernels.SoftcapBackward(x.Dev, 30f, dy.Dev, dx.Dev);
                c.Compare("dx", dx, 1e-5, 1e-5);
            });
        }

        // ------------------------------------------------------------------ embedding, loss
        foreach (var (t, v, d) in tiny ? new[] { (1, 5, 3), (7, 20, 9) } : new[] { (1, 5, 3), (37, 512, 288), (300, 50, 33) })
        {
            Add("Embedding", $"T={t} V={v} d={d}", c =>
            {
                var ids = c.Ints(t, 0, v);
                var table = c.Random(v, d); var o = c.Random(t, d);
                c.Reference.Kernels.Embedding(table.Ref, ids, o.Ref);
                c.Device.Kernels.Embedding(table.Dev, ids, o.Dev);
                c.Compare("output", o, 0, 0);
            });
            Add("EmbeddingBackward", $"T={t} V={v} d={d} (repeated ids)", c =>
            {
                var ids = c.Ints(t, 0, Math.Max(1, v / 4));
                var dout = c.Random(t, d); var dtable = c.Random(v, d);
                c.Reference.Kernels.EmbeddingBackward(ids, dout.Ref, dtable.Ref);
                c.Device.Kernels.EmbeddingBackward(ids, dout.Dev, dtable.Dev);
                c.Compare("dTable", dtable, 1e-5);
            });
        }
        foreach (var (t, v) in tiny ? new[] { (1, 7), (5, 100), (3, 1000) } : new[] { (1, 7), (37, 512), (64, 32000), (5, 100) })
        {
            Add("CrossEntropy", $"T={t} V={v}", c =>
            {
                var targets = c.Ints(t, 0, v);
                if (t > 2) targets[1] = -100;
                var logits = c.Pair(c.Uniform(t * v, -8, 8), t, v); var lse = c.Random(t);
                float lr = c.Reference.Kernels.CrossEntropy(logits.Ref, targets, lse.Ref);
                float ld = c.Device.Kernels.CrossEntropy(logits.Dev, targets, lse.Dev);
                c.CompareScalar("loss", lr, ld, 1e-4, 1e-5);
                c.Compare("lse", lse, 1e-4, 1e-5);
            });
            Add("CrossEntropyBackward", $"T={t} V={v}", c =>
            {
                var targets = c.Ints(t, 0, v);
                if (t > 2) targets[1] = -100;
                var logits = c.Pair(c.Uniform(t * v, -8, 8), t, v); var lse = c.Random(t);
                c.Reference.Kernels.CrossEntropy(logits.Ref, targets, lse.Ref);
                c.Device.Kernels.CrossEntropy(logits.Dev, targets, lse.Dev);
                var dl = c.Random(t, v);
                c.Reference.Kernels.CrossEntropyBackward(logits.Ref, targets, lse.Ref, dl.Ref, 0.7f);
                c.Device.Kernels.CrossEntropyBackward(logits.Dev, targets, lse.Dev, dl.Dev, 0.7f);
                c.Compare("dLogits", dl, 1e-6, 1e-4);
            });
            Add("CrossEntropyWithGradient", $"T={t} V={v} (in place)", c =>
            {
                var targets = c.Ints(t, 0, v);
                if (t > 2) targets[1] = -100;
                var logits = c.Pair(c.Uniform(t * v, -8, 8), t, v); var lse = c.Random(t);
                float lr = c.Reference.Kernels.CrossEntropyWithGradient(logits.Ref, targets, lse.Ref, logits.Ref, 0.7f);
                float ld = c.Device.Kernels.CrossEntropyWithGradient(logits.Dev, targets, lse.Dev, logits.Dev, 0.7f);
                c.CompareScalar("loss", lr, ld, 1e-4, 1e-5);
                c.Compare("lse", lse, 1e-4, 1e-5);
                c.Compare("dLogits", logits, 1e-6, 1e-4);
            });
        }

        // ------------------------------------------------------------------ optimizer, reductions, elementwise
        foreach (int n in tiny ? new[] { 1, 777 } : new[] { 1, 777, 300_001 })
        {
            Add("AdamW", $"n={n}", c =>
            {
                var p = c.Random(n); var g = c.Random(n); var m = c.Random(n); var v = c.Pair(c.Uniform(n, 0, 1), n);
                var step = new AdamWStep(1e-3f, 7, WeightDecay: 0.1f, GradScale: 0.5f);
                c.Reference.Kernels.AdamW(p.Ref, g.Ref, m.Ref, v.Ref, step);
                c.Device.Kernels.AdamW(p.Dev, g.Dev, m.Dev, v.Dev, step);
                c.Compare("param", p, 1e-6, 1e-5);
                c.Compare("m", m, 1e-6, 1e-5);
                c.Compare("v", v, 1e-6, 1e-5);
            });
        }
        Add("GlobalNorm", "three tensors, one empty", c =>
        {
            var a = c.Random(tiny ? 100 : 1000); var b = c.Random(tiny ? 3001 : 300_001); var e = c.Random(0);
            float r = c.Reference.Kernels.GlobalNorm([a.Ref, b.Ref, e.Ref]);
            float d = c.Device.Kernels.GlobalNorm([a.Dev, b.Dev, e.Dev]);
            c.CompareScalar("norm", r, d, 1e-5, 1e-5);
        });
        foreach (int n in tiny ? new[] { 1, 1025 } : new[] { 1, 1025, 1 << 20 })
        {
            Add("Add", $"n={n}", c =>
            {
                var a = c.Random(n); var b = c.Random(n); var y = c.Random(n);
                c.Reference.Kernels.Add(a.Ref, b.Ref, y.Ref); c.Device.Kernels.Add(a.Dev, b.Dev, y.Dev);
                c.Compare("y", y, 0, 0);
                c.Reference.Kernels.Add(a.Ref, b.Ref, a.Ref); c.Device.Kernels.Add(a.Dev, b.Dev, a.Dev);
                c.Compare("a (in place)", a, 0, 0);
            });
            Add("Multiply", $"n={n}", c =>
            {
                var a = c.Random(n); var b = c.Random(n); var y = c.Random(n);
                c.Reference.Kernels.Multiply(a.Ref, b.Ref, y.Ref); c.Device.Kernels.Multiply(a.Dev, b.Dev, y.Dev);
                c.Compare("y", y, 0, 0);
            });
            Add("Scale", $"n={n}", c =>
            {
                var x = c.Random(n); var y = c.Random(n);
                c.Reference.Kernels.Scale(x.Ref, -1.5f, y.Ref); c.Device.Kernels.Scale(x.Dev, -1.5f, y.Dev);
                c.Compare("y", y, 0, 0);
            });
            Add("Axpy", $"n={n}", c =>
            {
                var x = c.Random(n); var y = c.Random(n);
                c.Reference.Kernels.Axpy(0.3f, x.Ref, y.Ref); c.Device.Kernels.Axpy(0.3f, x.Dev, y.Dev);
                c.Compare("y", y, 1e-7, 1e-6);
            });
            Add("Copy", $"n={n}", c =>
            {
                var x = c.Random(n); var y = c.Random(n);
                c.Reference.Kernels.Copy(x.Ref, y.Ref); c.Device.Kernels.Copy(x.Dev, y.Dev);
                c.Compare("dst", y, 0, 0);
            });
            Add("Fill", $"n={n}", c =>
            {
                var x = c.Random(n);
                c.Reference.Kernels.Fill(x.Ref, 2.5f); c.Device.Kernels.Fill(x.Dev, 2.5f);
                c.Compare("t", x, 0, 0);
            });
        }
        Add("Copy", "overlapping views (memmove)", c =>
        {
            var x = c.Random(1000);
            c.Reference.Kernels.Copy(x.Ref.Slice(0, 900), x.Ref.Slice(100, 900));
            c.Device.Kernels.Copy(x.Dev.Slice(0, 900), x.Dev.Slice(100, 900));
            c.Compare("x", x, 0, 0);
        });
        return list;
    }
}
