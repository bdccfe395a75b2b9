using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

/// <summary>
/// Finite-difference checks of tape gradients on float32 models: the analytic directional derivative
/// g . u is compared with (L(p + eps u) - L(p - eps u)) / 2 eps, where the loss is accumulated in double.
/// One direction per parameter tensor, so a gradient routed to the wrong tensor fails too.
/// </summary>
internal static class GradCheck
{
    public static void PerTensor(Func<double> loss, IReadOnlyList<Var> parameters, Rng rng, double eps, double tol, string what)
    {
        foreach (var p in parameters)
        {
            var value = p.Value.Span;
            var grad = p.Grad?.ToArray() ?? new float[value.Length];
            var keep = value.ToArray();
            var u = rng.Normal(value.Length);
            double analytic = 0, gNorm = 0, uNorm = 0;
            for (int i = 0; i < u.Length; i++)
            {
                analytic += (double)grad[i] * u[i];
                gNorm += (double)grad[i] * grad[i];
                uNorm += (double)u[i] * u[i];
            }
            for (int i = 0; i < u.Length; i++) value[i] = keep[i] + (float)eps * u[i];
            double up = loss();
            for (int i = 0; i < u.Length; i++) value[i] = keep[i] - (float)eps * u[i];
            double down = loss();
            keep.CopyTo(value);
            double numeric = (up - down) / (2 * eps);
            double bound = tol * Math.Sqrt(gNorm * uNorm) + 1e-4;
            Assert.True(Math.Abs(numeric - analytic) <= bound,
                $"{what}: d/d{p.Name} along a random direction: tape {analytic:G6}, finite difference {numeric:G6} (|g| {Math.Sqrt(gNorm):G4}, bound {bound:G3})");
        }
    }

    /// <summary>Fills every weight of a freshly allocated model with small seeded values (norm gains near 1).</summary>
    public static LlamaWeights RandomWeights(LlamaConfig config, int seed, Accelerator? accelerator = null)
    {
        var weights = LlamaWeights.Allocate(accelerator ?? TestBackend.Shared, config);
        var rng = new Rng(seed);
        foreach (var (name, t) in weights.Named())
        {
            bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
            var values = norm ? rng.Uniform(t.Length, 0.8f, 1.2f) : rng.Normal(t.Length, 0.5f / MathF.Sqrt(t.Dim(-1)) * 2);
            t.CopyFrom(values);
        }
        return weights;
    }

    public static LlamaConfig TinyConfig(bool tied = false) => new()
    {
        Dim = 16, HiddenDim = 24, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 37, MaxSeqLen = 64, TiedEmbeddings = tied,
    };
}
