using UioLlm.Kernels;
using UioLlm.Model.Autograd;

namespace UioLlm.Model.Methods;

/// <summary>
/// The attention of a kNN memory layer (computed on the host: the memory is a host datastore). Each query row t
/// and head h reads (a) its segment's rows 0..t causally with rotated query and keys (the local arm) and (b) the
/// <c>topK</c> memory rows with the highest scores (raw query . raw key) / sqrt(d), found exactly (the memory arm;
/// memory keys and the query used against them carry no positions). Two ways to combine them:
/// gated (Memorizing Transformers): out = g_h * mem + (1 - g_h) * local with g_h = sigmoid(bias_h), each arm its own
/// softmax (a row with nothing retrieved reads local only); joint (Focused Transformer): one softmax over the
/// retrieved and the local keys together. Gradients reach the queries, the local keys and values and the gate bias;
/// the memory is a constant and the top-k selection is piecewise constant.
/// </summary>
public static class MemoryAttention
{
    /// <summary>The memory rows each (query row, head) retrieved in the last forward: [t][h] -> rows, highest score first.</summary>
    public sealed record Retrieval(int[][][] Rows);

    /// <param name="qRot">Queries after RoPE [T, H, d].</param>
    /// <param name="qRaw">The same queries before RoPE [T, H, d] (what is compared with memory keys).</param>
    /// <param name="keys">The segment's keys after RoPE [T, KvH, d].</param>
    /// <param name="values">The segment's values [T, KvH, d].</param>
    /// <param name="memory">Earlier (key, value) pairs; read only.</param>
    /// <param name="topK">Rows retrieved per query and head (0: the local arm alone).</param>
    /// <param name="gateBias">Per-head gate bias [H] (gated mode), or null for one joint softmax.</param>
    /// <param name="retrieval">Receives the retrieved rows.</param>
    public static Var Forward(Tape tape, Var qRot, Var qRaw, Var keys, Var values, KnnMemory memory, int topK, Var? gateBias, out Retrieval retrieval)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(memory);
        tape.BeginOp("MemoryAttention");
        int t = qRot.Value.Dim(0), heads = qRot.Value.Dim(1), d = qRot.Value.Dim(2), kvHeads = keys.Value.Dim(1);
        if (keys.Value.Dim(0) != t || values.Value.Dim(0) != t || qRaw.Value.Dim(0) != t)
            throw new ArgumentException($"MemoryAttention: queries {qRot.Value.ShapeString}, keys {keys.Value.ShapeString}, values {values.Value.ShapeString} do not match");
        if (memory.KvHeads != kvHeads || memory.HeadDim != d) throw new ArgumentException("MemoryAttention: the memory's shape is not the layer's");
        int group = heads / kvHeads;
        double scale = 1.0 / Math.Sqrt(d);
        var qr = qRot.Value.ToArray();
        var qw = qRaw.Value.ToArray();
        var k = keys.Value.ToArray();
        var v = values.Value.ToArray();
        var g = gateBias?.Value.ToArray().Select(b => 1.0 / (1.0 + Math.Exp(-b))).ToArray();
        var memK = memory.Keys.ToArray();
        var memV = memory.Values.ToArray();
        var rows = new int[t][][];
        var output = new float[t * heads * d];
        for (int i = 0; i < t; i++)
        {
            rows[i] = new int[heads][];
            for (int h = 0; h < heads; h++)
            {
                int kv = h / group;
                var found = memory.TopK(qw.AsSpan((i * heads + h) * d, d), kv, topK, scale);
                rows[i][h] = found.Select(f => f.Row).ToArray();
                var (pLocal, pMem, gate) = Probabilities(i, h, kv, rows[i][h], found.Select(f => f.Score).ToArray());
                double wLocal = g is null ? 1 : 1 - gate, wMem = g is null ? 1 : gate;
                var o = output.AsSpan((i * heads + h) * d, d);
                for (int j = 0; j <= i; j++)
                    for (int x = 0; x < d; x++) o[x] += (float)(wLocal * pLocal[j] * v[(j * kvHeads + kv) * d + x]);
                for (int m = 0; m < pMem.Length; m++)
                    for (int x = 0; x < d; x++) o[x] += (float)(wMem * pMem[m] * memV[(rows[i][h][m] * kvHeads + kv) * d + x]);
            }
        }
        retrieval = new Retrieval(rows);

        // Local and memory probabilities of one (row, head) and the gate: gated arms are separate softmaxes (weights
        // 1 - g and g; g = 0 when nothing was retrieved), a joint softmax spans both (weight 1 on each, gate unused).
        (double[] Local, double[] Mem, double Gate) Probabilities(int i, int h, int kv, int[] memRows, double[] memScores)
        {
            var local = new double[i + 1];
            for (int j = 0; j <= i; j++) local[j] = scale * HostAttention.Dot(qr.AsSpan((i * heads + h) * d, d), k.AsSpan((j * kvHeads + kv) * d, d));
            if (g is not null)
            {
                Softmax(local);
                Softmax(memScores);
                return (local, memScores, memRows.Length == 0 ? 0 : g[h]);
            }
            var all = local.Concat(memScores).ToArray();
            Softmax(all);
            return (all[..(i + 1)], all[(i + 1)..], 0);
        }

        var result = tape.Rent([t, heads, d], "memory-attention");
        result.CopyFrom(output);
        bool grad = tape.NeedsGrad(qRot, qRaw, keys) || tape.NeedsGrad(values) || (gateBias is not null && tape.NeedsGrad(gateBias));
        var outVar = tape.Output(result, grad);
        if (!grad) return outVar;
        tape.Record("MemoryAttention", outVar, () =>
        {
            var dOut = outVar.Grad!.ToArray();
            var dqr = new float[qr.Length];
            var dqw = new float[qw.Length];
            var dk = new float[k.Length];
            var dv = new float[v.Length];
            var db = new float[heads];
            for (int i = 0; i < t; i++)
                for (int h = 0; h < heads; h++)
                {
                    int kv = h / group;
                    var memRows = rows[i][h];
                    var memScores = memRows.Select(r => scale * HostAttention.Dot(qw.AsSpan((i * heads + h) * d, d), memK.AsSpan((r * kvHeads + kv) * d, d))).ToArray();
                    var (pLocal, pMem, gate) = Probabilities(i, h, kv, memRows, memScores);
                    double wLocal = g is null ? 1 : 1 - gate, wMem = g is null ? 1 : gate;
                    var dO = dOut.AsSpan((i * heads + h) * d, d).ToArray();
                    double LocalDot(int j) => HostAttention.Dot(dO, v.AsSpan((j * kvHeads + kv) * d, d));
                    double MemDot(int m) => HostAttention.Dot(dO, memV.AsSpan((memRows[m] * kvHeads + kv) * d, d));
                    var dpLocal = Enumerable.Range(0, i + 1).Select(j => wLocal * LocalDot(j)).ToArray();
                    var dpMem = Enumerable.Range(0, memRows.Length).Select(m => wMem * MemDot(m)).ToArray();
                    if (g is not null && memRows.Length > 0)
                    {
                        double oMemDot = 0, oLocalDot = 0;
                        for (int m = 0; m < memRows.Length; m++) oMemDot += pMem[m] * MemDot(m);
                        for (int j = 0; j <= i; j++) oLocalDot += pLocal[j] * LocalDot(j);
                        db[h] += (float)(gate * (1 - gate) * (oMemDot - oLocalDot));
                    }
                    double sumLocal = 0, sumMem = 0;
                    for (int j = 0; j <= i; j++) sumLocal += pLocal[j] * dpLocal[j];
                    for (int m = 0; m < memRows.Length; m++) sumMem += pMem[m] * dpMem[m];
                    if (g is null) sumLocal = sumMem = sumLocal + sumMem;   // one softmax
                    for (int j = 0; j <= i; j++)
                    {
                        double ds = scale * pLocal[j] * (dpLocal[j] - sumLocal);
                        for (int x = 0; x < d; x++)
                        {
                            dqr[(i * heads + h) * d + x] += (float)(ds * k[(j * kvHeads + kv) * d + x]);
                            dk[(j * kvHeads + kv) * d + x] += (float)(ds * qr[(i * heads + h) * d + x]);
                            dv[(j * kvHeads + kv) * d + x] += (float)(wLocal * pLocal[j] * dO[x]);
                        }
                    }
                    for (int m = 0; m < memRows.Length; m++)
                    {
                        double ds = scale * pMem[m] * (dpMem[m] - sumMem);
                        for (int x = 0; x < d; x++) dqw[(i * heads + h) * d + x] += (float)(ds * memK[(memRows[m] * kvHeads + kv) * d + x]);
                    }
                }
            Accumulate(tape, qRot, dqr);
            Accumulate(tape, qRaw, dqw);
            Accumulate(tape, keys, dk);
            Accumulate(tape, values, dv);
            if (gateBias is not null) Accumulate(tape, gateBias, db);
        });
        return outVar;
    }

    private static void Softmax(double[] s)
    {
        if (s.Length == 0) return;
        double max = s.Max(), sum = 0;
        for (int i = 0; i < s.Length; i++) sum += s[i] = Math.Exp(s[i] - max);
        for (int i = 0; i < s.Length; i++) s[i] /= sum;
    }

    private static void Accumulate(Tape tape, Var target, float[] gradient)
    {
        var into = target.GradForAccumulate();
        if (into is null) return;
        var g = tape.Rent(target.Value.Shape, "memory-attention.grad");
        g.CopyFrom(gradient);
        tape.Accelerator.Kernels.Axpy(1f, g, into);
    }
}
