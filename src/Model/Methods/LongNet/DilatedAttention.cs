using UioLlm.Model.Autograd;

namespace UioLlm.Model.Methods;

/// <summary>
/// LongNet's dilated attention (Ding et al., 2023), computed on the host. Level i (0 &lt;= i &lt; levels) cuts the
/// sequence into segments of w_i = segment x ratio^i tokens and keeps every r_i = ratio^i-th token of each segment,
/// starting at offset (head mod r_i) within the segment, so the heads of a layer cover different offsets. A query
/// attends (causally) to the kept keys of its own segment at every level where the query itself is kept.
/// </summary>
/// <remarks>
/// The levels' outputs are mixed with weights proportional to their softmax denominators, alpha_i = s_i / sum_j s_j
/// (the paper's Eq. 10). Since O_i = sum_{k in B_i} e^{s_k} v_k / s_i, the mix is
/// sum_i sum_{k in B_i} e^{s_k} v_k / sum_i sum_{k in B_i} e^{s_k}: one softmax over the keys where each key counts
/// as many times as the levels that pair it with the query (<see cref="Multiplicity"/>). That is what is computed
/// here, in double precision, with its exact gradient. Level 0 keeps every token (r_0 = 1), so every query reads at
/// least itself. Cost: each query scans the keys of its top-level segment, O(T x w_top x heads x head_dim) per layer however sparse the pattern (correctness over speed).
/// </remarks>
public sealed class DilatedAttention
{
    /// <param name="segment">w_0, the first level's segment length.</param>
    /// <param name="ratio">The geometric growth of segment length and dilation from one level to the next.</param>
    /// <param name="levels">The number of (w_i, r_i) pairs.</param>
    public DilatedAttention(int segment, int ratio, int levels)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(segment, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(ratio, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(levels, 1);
        if (Math.Pow(ratio, levels - 1) * segment > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(levels), $"DilatedAttention: the last segment ({segment} x {ratio}^{levels - 1}) exceeds {int.MaxValue} tokens");
        Segment = segment;
        Ratio = ratio;
        Levels = levels;
    }

    public int Segment { get; }
    public int Ratio { get; }
    public int Levels { get; }

    /// <summary>The first key position any level can pair with query position <paramref name="query"/>: the start of its top-level segment.</summary>
    public int FirstKey(int query)
    {
        long top = (long)Segment * (long)Math.Pow(Ratio, Levels - 1);
        return (int)(query / top * top);
    }

    /// <summary>In how many levels query position <paramref name="query"/> of head <paramref name="head"/> reads key position <paramref name="key"/> (0: not attended).</summary>
    public int Multiplicity(int head, int query, int key)
    {
        if (key < 0 || key > query) return 0;
        int count = 0;
        long w = Segment, r = 1;
        for (int i = 0; i < Levels; i++, w *= Ratio, r *= Ratio)
        {
            if (query / w != key / w) continue;
            long start = query / w * w, offset = head % r;
            if ((query - start) % r == offset && (key - start) % r == offset) count++;
        }
        return count;
    }

    /// <summary>
    /// Attention of queries q [tq, heads, dim] at positions start.. over keys and values [tk, kvHeads, dim] at
    /// positions 0..tk-1 (tk &gt;= start + tq); with <paramref name="gradOutput"/>, also the gradients of q, k, v.
    /// </summary>
    public (float[] Output, float[]? Dq, float[]? Dk, float[]? Dv) Compute(float[] q, float[] k, float[] v, int tq, int tk, int heads, int kvHeads, int dim, int start, float[]? gradOutput)
    {
        if (heads % kvHeads != 0) throw new ArgumentException($"DilatedAttention: {heads} heads are not a multiple of {kvHeads} kv heads");
        if (start + tq > tk) throw new ArgumentException($"DilatedAttention: queries up to position {start + tq - 1} with {tk} keys");
        int group = heads / kvHeads;
        double scale = 1 / Math.Sqrt(dim);
        var output = new float[tq * heads * dim];
        float[]? dq = gradOutput is null ? null : new float[q.Length], dk = gradOutput is null ? null : new float[k.Length], dv = gradOutput is null ? null : new float[v.Length];
        var scores = new double[tk];
        var weights = new double[tk];
        var acc = new double[dim];
        for (int t = 0; t < tq; t++)
        {
            int p = start + t;
            for (int h = 0; h < heads; h++)
            {
                int g = h / group, qo = (t * heads + h) * dim;
                double max = double.NegativeInfinity;
                int first = FirstKey(p);
                for (int j = first; j <= p; j++)
                {
                    weights[j] = Multiplicity(h, p, j);
                    if (weights[j] == 0) continue;
                    int ko = (j * kvHeads + g) * dim;
                    double s = 0;
                    for (int e = 0; e < dim; e++) s += (double)q[qo + e] * k[ko + e];
                    scores[j] = s * scale;
                    max = Math.Max(max, scores[j]);
                }
                double z = 0;
                for (int j = first; j <= p; j++)
                    if (weights[j] != 0) { weights[j] *= Math.Exp(scores[j] - max); z += weights[j]; }
                Array.Clear(acc);
                for (int j = first; j <= p; j++)
                {
                    if (weights[j] == 0) continue;
                    weights[j] /= z;
                    int vo = (j * kvHeads + g) * dim;
                    for (int e = 0; e < dim; e++) acc[e] += weights[j] * v[vo + e];
                }
                for (int e = 0; e < dim; e++) output[qo + e] = (float)acc[e];
                if (gradOutput is null) continue;
                // dA_j = dO . v_j; dS_j = A_j (dA_j - sum_i A_i dA_i).
                double dot = 0;
                for (int j = first; j <= p; j++)
                {
                    if (weights[j] == 0) continue;
                    int vo = (j * kvHeads + g) * dim;
                    double da = 0;
                    for (int e = 0; e < dim; e++) { da += (double)gradOutput[qo + e] * v[vo + e]; dv![vo + e] += (float)(weights[j] * gradOutput[qo + e]); }
                    scores[j] = da;
                    dot += weights[j] * da;
                }
                for (int j = first; j <= p; j++)
                {
                    if (weights[j] == 0) continue;
                    double ds = weights[j] * (scores[j] - dot) * scale;
                    int ko = (j * kvHeads + g) * dim;
                    for (int e = 0; e < dim; e++)
                    {
                        dq![qo + e] += (float)(ds * k[ko + e]);
                        dk![ko + e] += (float)(ds * q[qo + e]);
                    }
                }
            }
        }
        return (output, dq, dk, dv);
    }

    /// <summary>The tape op of training: queries, keys and values of the same <c>T</c> tokens at positions 0..T-1.</summary>
    public Var Attend(Tape tape, Var q, Var k, Var v)
    {
        ArgumentNullException.ThrowIfNull(tape);
        int t = q.Value.Dim(0), heads = q.Value.Dim(1), dim = q.Value.Dim(2), kvHeads = k.Value.Dim(1);
        return tape.HostOp("DilatedAttention", [q, k, v], [t, heads, dim],
            x => Compute(x[0], x[1], x[2], t, t, heads, kvHeads, dim, 0, null).Output,
            (x, dOut) =>
            {
                var (_, dq, dk, dv) = Compute(x[0], x[1], x[2], t, t, heads, kvHeads, dim, 0, dOut);
                return [dq, dk, dv];
            });
    }

    /// <summary>A session's state: every layer's rotated keys and values so far (the pattern reaches back a whole top-level segment).</summary>
    public IStreamAttentionState NewStreamState(int layers) => new StreamState(this, layers);

    private sealed class StreamState(DilatedAttention attention, int layers) : IStreamAttentionState
    {
        private readonly List<float>[] keys = Enumerable.Range(0, layers).Select(_ => new List<float>()).ToArray();
        private readonly List<float>[] values = Enumerable.Range(0, layers).Select(_ => new List<float>()).ToArray();

        public long Bytes => keys.Sum(k => (long)k.Count) * 2 * sizeof(float);

        public Var Attend(Tape tape, int layer, Var q, Var k, Var v, int start)
        {
            int t = q.Value.Dim(0), heads = q.Value.Dim(1), dim = q.Value.Dim(2), kvHeads = k.Value.Dim(1);
            return tape.HostOp("DilatedAttention", [q, k, v], [t, heads, dim], x =>
            {
                if (keys[layer].Count != start * kvHeads * dim)
                    throw new InvalidOperationException($"DilatedAttention: layer {layer} holds {keys[layer].Count / (kvHeads * dim)} tokens, the new ones start at {start}");
                keys[layer].AddRange(x[1]);
                values[layer].AddRange(x[2]);
                int tk = start + t;
                return attention.Compute(x[0], [.. keys[layer]], [.. values[layer]], t, tk, heads, kvHeads, dim, start, null).Output;
            }, null);
        }
    }
}
