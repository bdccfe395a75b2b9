using UioLlm.Model.Autograd;

namespace UioLlm.Model.Methods;

/// <summary>
/// Performer-style causal linear attention with FAVOR+ positive random features (Choromanski et al., 2021), computed
/// on the host in double precision. With x' = x / head_dim^(1/4) (the softmax's 1/sqrt(head_dim) split between q and
/// k), phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m) for m Gaussian rows of W, so that E[phi(q) . phi(k)] = exp(q.k / sqrt(d)).
/// The output of query t is phi(q_t)^T S_t / (phi(q_t) . z_t) with S_t = sum_{j &lt;= t} phi(k_j) v_j^T and
/// z_t = sum_{j &lt;= t} phi(k_j): causal prefix sums, one state (S, z) per layer and kv head.
/// </summary>
/// <remarks>
/// RoPE is applied to q and k before the feature map (the model's rotated queries and keys are what come in), so
/// relative positions still reach the kernel through the rotation. W is drawn once per layer from a seed and never
/// redrawn (training, inference and every replica use the same features). Training and the recurrent session share
/// one scan (<see cref="Forward"/>), so the session equals the parallel causal form exactly on the same inputs.
/// A query's features are divided by their largest entry (cancels in the ratio); phi(k) &lt;= exp(|w|^2 / 2) cannot
/// overflow; should every key's features underflow to 0 the output is 0.
/// </remarks>
public sealed class FavorAttention
{
    private readonly double[][] projections;   // [layer][m x dim]

    /// <param name="layers">Layers (one W each).</param>
    /// <param name="features">m, the random features per head.</param>
    /// <param name="dim">The head dimension.</param>
    /// <param name="seed">Draws W.</param>
    public FavorAttention(int layers, int features, int dim, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(features, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        Features = features;
        Dim = dim;
        var rng = new Random(seed);
        projections = new double[layers][];
        for (int l = 0; l < layers; l++)
        {
            var w = projections[l] = new double[features * dim];
            for (int i = 0; i < w.Length; i++)
            {
                double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
                w[i] = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            }
        }
    }

    public int Features { get; }
    public int Dim { get; }
    public int Layers => projections.Length;

    /// <summary>The recurrent state of one layer: S [kvHeads][m x dim] and z [kvHeads][m].</summary>
    public sealed class State(int kvHeads, int features, int dim)
    {
        public double[][] S { get; } = Enumerable.Range(0, kvHeads).Select(_ => new double[features * dim]).ToArray();
        public double[][] Z { get; } = Enumerable.Range(0, kvHeads).Select(_ => new double[features]).ToArray();
        /// <summary>Bytes of the state (as float32 on a device: kvHeads x (m x dim + m) x 4).</summary>
        public long Bytes => (long)S.Length * (S[0].Length + Z[0].Length) * sizeof(float);
    }

    /// <summary>
    /// phi(x) into <paramref name="result"/>; <paramref name="stabilise"/> (queries only) divides it by its largest
    /// entry's exponential, which cancels in num / den exactly and keeps the denominator from underflowing.
    /// </summary>
    private double[] Phi(int layer, ReadOnlySpan<float> x, double[] result, bool stabilise = false)
    {
        var w = projections[layer];
        double s = Math.Pow(Dim, -0.25), norm = 0;
        for (int e = 0; e < Dim; e++) norm += (s * x[e]) * (s * x[e]);
        double inv = 1 / Math.Sqrt(Features);
        for (int i = 0; i < Features; i++)
        {
            double dot = 0;
            for (int e = 0; e < Dim; e++) dot += w[i * Dim + e] * s * x[e];
            result[i] = dot - norm / 2;
        }
        double shift = stabilise ? result.AsSpan(0, Features).ToArray().Max() : 0;
        for (int i = 0; i < Features; i++) result[i] = Math.Exp(result[i] - shift) * inv;
        return result;
    }

    /// <summary>Accumulates into <paramref name="dx"/> the gradient through phi of x, given phi(x) and dL/dphi.</summary>
    private void PhiBackward(int layer, ReadOnlySpan<float> x, double[] phi, double[] dPhi, Span<float> dx)
    {
        var w = projections[layer];
        double s = Math.Pow(Dim, -0.25), total = 0;
        for (int i = 0; i < Features; i++) total += dPhi[i] * phi[i];
        for (int e = 0; e < Dim; e++)
        {
            double g = -s * x[e] * total;
            for (int i = 0; i < Features; i++) g += dPhi[i] * phi[i] * w[i * Dim + e];
            dx[e] += (float)(g * s);
        }
    }

    /// <summary>
    /// The causal scan of layer <paramref name="layer"/> over q [t, heads, dim], k, v [t, kvHeads, dim], continuing
    /// <paramref name="state"/> (updated in place); returns the output [t, heads, dim].
    /// </summary>
    public float[] Forward(int layer, float[] q, float[] k, float[] v, int t, int heads, int kvHeads, State state)
    {
        int group = heads / kvHeads, m = Features, d = Dim;
        var output = new float[t * heads * d];
        var phi = new double[m];
        for (int i = 0; i < t; i++)
        {
            for (int g = 0; g < kvHeads; g++)
            {
                int ko = (i * kvHeads + g) * d;
                Phi(layer, k.AsSpan(ko, d), phi);
                var s = state.S[g];
                var z = state.Z[g];
                for (int f = 0; f < m; f++)
                {
                    z[f] += phi[f];
                    for (int e = 0; e < d; e++) s[f * d + e] += phi[f] * v[ko + e];
                }
            }
            for (int h = 0; h < heads; h++)
            {
                int g = h / group, qo = (i * heads + h) * d;
                Phi(layer, q.AsSpan(qo, d), phi, stabilise: true);
                var s = state.S[g];
                var z = state.Z[g];
                double den = 0;
                for (int f = 0; f < m; f++) den += phi[f] * z[f];
                for (int e = 0; e < d; e++)
                {
                    double num = 0;
                    for (int f = 0; f < m; f++) num += phi[f] * s[f * d + e];
                    output[qo + e] = den > 0 ? (float)(num / den) : 0f;
                }
            }
        }
        return output;
    }

    /// <summary>Gradients of q, k, v of a scan from the empty state, given the output's gradient.</summary>
    public (float[] Dq, float[] Dk, float[] Dv) Backward(int layer, float[] q, float[] k, float[] v, float[] gradOutput, int t, int heads, int kvHeads)
    {
        int group = heads / kvHeads, m = Features, d = Dim;
        // Forward again, keeping the features and the states after each token.
        var phiK = new double[t * kvHeads][];
        var phiQ = new double[t * heads][];
        var states = new (double[] S, double[] Z)[t * kvHeads];
        var state = new State(kvHeads, m, d);
        for (int i = 0; i < t; i++)
            for (int g = 0; g < kvHeads; g++)
            {
                int ko = (i * kvHeads + g) * d;
                var phi = phiK[i * kvHeads + g] = Phi(layer, k.AsSpan(ko, d), new double[m]);
                for (int f = 0; f < m; f++)
                {
                    state.Z[g][f] += phi[f];
                    for (int e = 0; e < d; e++) state.S[g][f * d + e] += phi[f] * v[ko + e];
                }
                states[i * kvHeads + g] = ((double[])state.S[g].Clone(), (double[])state.Z[g].Clone());
            }
        for (int i = 0; i < t; i++)
            for (int h = 0; h < heads; h++)
                phiQ[i * heads + h] = Phi(layer, q.AsSpan((i * heads + h) * d, d), new double[m], stabilise: true);
        var dq = new float[q.Length];
        var dk = new float[k.Length];
        var dv = new float[v.Length];
        var gradS = Enumerable.Range(0, kvHeads).Select(_ => new double[m * d]).ToArray();
        var gradZ = Enumerable.Range(0, kvHeads).Select(_ => new double[m]).ToArray();
        var dPhi = new double[m];
        var num = new double[d];
        var dNum = new double[d];
        for (int i = t - 1; i >= 0; i--)
        {
            for (int h = 0; h < heads; h++)
            {
                int g = h / group, qo = (i * heads + h) * d;
                var a = phiQ[i * heads + h];
                var (s, z) = states[i * kvHeads + g];
                double den = 0;
                for (int f = 0; f < m; f++) den += a[f] * z[f];
                if (!(den > 0)) continue;   // every key's features underflowed: the output is 0, no gradient
                double dDen = 0;
                for (int e = 0; e < d; e++)
                {
                    double n = 0;
                    for (int f = 0; f < m; f++) n += a[f] * s[f * d + e];
                    num[e] = n;
                    dNum[e] = gradOutput[qo + e] / den;
                    dDen -= gradOutput[qo + e] * n / (den * den);
                }
                for (int f = 0; f < m; f++)
                {
                    double da = z[f] * dDen;
                    for (int e = 0; e < d; e++)
                    {
                        da += s[f * d + e] * dNum[e];
                        gradS[g][f * d + e] += a[f] * dNum[e];
                    }
                    gradZ[g][f] += a[f] * dDen;
                    dPhi[f] = da;
                }
                PhiBackward(layer, q.AsSpan(qo, d), a, dPhi, dq.AsSpan(qo, d));
            }
            for (int g = 0; g < kvHeads; g++)
            {
                int ko = (i * kvHeads + g) * d;
                var b = phiK[i * kvHeads + g];
                for (int f = 0; f < m; f++)
                {
                    double db = gradZ[g][f];
                    for (int e = 0; e < d; e++)
                    {
                        db += gradS[g][f * d + e] * v[ko + e];
                        dv[ko + e] += (float)(gradS[g][f * d + e] * b[f]);
                    }
                    dPhi[f] = db;
                }
                PhiBackward(layer, k.AsSpan(ko, d), b, dPhi, dk.AsSpan(ko, d));
            }
        }
        return (dq, dk, dv);
    }

    /// <summary>The tape op of training: the scan over T tokens from the empty state, with its gradient.</summary>
    public Var Attend(Tape tape, int layer, Var q, Var k, Var v)
    {
        ArgumentNullException.ThrowIfNull(tape);
        int t = q.Value.Dim(0), heads = q.Value.Dim(1), kvHeads = k.Value.Dim(1);
        CheckShapes(q, k);
        return tape.HostOp("FavorAttention", [q, k, v], [t, heads, Dim],
            x => Forward(layer, x[0], x[1], x[2], t, heads, kvHeads, new State(kvHeads, Features, Dim)),
            (x, dOut) =>
            {
                var (dq, dk, dv) = Backward(layer, x[0], x[1], x[2], dOut, t, heads, kvHeads);
                return [dq, dk, dv];
            });
    }

    private void CheckShapes(Var q, Var k)
    {
        if (q.Value.Dim(2) != Dim || k.Value.Dim(2) != Dim)
            throw new ArgumentException($"FavorAttention: head_dim {q.Value.Dim(2)} / {k.Value.Dim(2)}, the features were drawn for {Dim}");
        if (q.Value.Dim(1) % k.Value.Dim(1) != 0)
            throw new ArgumentException($"FavorAttention: {q.Value.Dim(1)} heads are not a multiple of {k.Value.Dim(1)} kv heads");
    }

    /// <summary>A session's state: one (S, z) per layer and kv head; constant in the stream's length.</summary>
    public IStreamAttentionState NewStreamState(int kvHeads) => new StreamState(this, kvHeads);

    private sealed class StreamState(FavorAttention attention, int kvHeads) : IStreamAttentionState
    {
        private readonly State[] states = Enumerable.Range(0, attention.Layers).Select(_ => new State(kvHeads, attention.Features, attention.Dim)).ToArray();

        public long Bytes => states.Sum(s => s.Bytes);

        public Var Attend(Tape tape, int layer, Var q, Var k, Var v, int start)
        {
            int t = q.Value.Dim(0), heads = q.Value.Dim(1);
            attention.CheckShapes(q, k);
            return tape.HostOp("FavorAttention", [q, k, v], [t, heads, attention.Dim],
                x => attention.Forward(layer, x[0], x[1], x[2], t, heads, kvHeads, states[layer]), null);
        }
    }
}
