using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using UioLlm.Training.Optim;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>Shared checks of the fine-tuning methods (LongLoRA, RoPE-scaling fine-tunes): gradients, merged-weight references, a training loop.</summary>
internal static class TrainedMethodSupport
{
    public const int Vocab = 37;

    /// <summary>Moves every parameter off its initial value (LoRA B is zero at start, so A would get no gradient otherwise).</summary>
    public static void Perturb(FinetuneMethod method, int seed, float std = 0.15f)
    {
        var rng = new Rng(seed);
        foreach (var (_, p, _) in method.Model.Parameters)
        {
            var v = p.Value.Span;
            var noise = rng.Normal(v.Length, std);
            for (int i = 0; i < v.Length; i++) v[i] += noise[i];
        }
    }

    /// <summary>Finite-difference check of <see cref="ITrainableMethod.Accumulate"/> along a random direction per parameter tensor.</summary>
    public static void CheckGradients(FinetuneMethod method, int[] document, int[] targets, int seed, string what)
    {
        foreach (var p in method.Parameters) p.Parameter.ZeroGrad();
        var result = method.Accumulate(document, targets, seed);
        Assert.Equal(1, result.Units);
        Assert.Equal(targets.Count(t => t != -100), result.Tokens);
        Assert.Equal(method.Loss(document, targets), result.Loss, 5);
        GradCheck.PerTensor(() => method.Loss(document, targets), method.Parameters.Select(p => p.Parameter).ToList(), new Rng(seed + 1), 1e-2, 3e-2, what);
    }

    public static int[] Shifted(int[] document) => document[1..];

    /// <summary>
    /// An independent reference: a plain frozen <see cref="LlamaModel"/> whose weights are the base's with every LoRA
    /// merged in (W + scale B A) and, under LoRA+, the trained norms and embedding; RoPE from the method's table.
    /// </summary>
    public static (LlamaWeights Weights, LlamaModel Model) Merged(FinetuneMethod method)
    {
        var baseWeights = method.Base.Weights;
        var c = baseWeights.Config;
        var merged = LlamaWeights.Allocate(baseWeights.Accelerator, c);
        foreach (var (name, t) in baseWeights.Named()) merged.Find(name)!.CopyFrom(t.ToArray());
        var ft = method.Model;
        if (ft.TrainsNormsAndEmbedding)
        {
            merged.TokenEmbedding.CopyFrom(ft.Embedding.Value.ToArray());
            merged.FinalNorm.CopyFrom(ft.FinalNorm.Value.ToArray());
        }
        for (int l = 0; l < c.Layers; l++)
        {
            var layer = merged.Layers[l];
            if (ft.TrainsNormsAndEmbedding)
            {
                layer.AttentionNorm.CopyFrom(ft.Norms(l).Attention.Value.ToArray());
                layer.FfnNorm.CopyFrom(ft.Norms(l).Ffn.Value.ToArray());
            }
            var targets = new[] { layer.Wq, layer.Wk, layer.Wv, layer.Wo };
            for (int p = 0; p < 4; p++)
            {
                if (ft.Adapters(l)[p] is not { } lora) continue;
                var w = targets[p].ToArray();
                var a = lora.A.Value.ToArray();
                var b = lora.B.Value.ToArray();
                int outF = targets[p].Dim(0), inF = targets[p].Dim(1), r = lora.Rank;
                for (int o = 0; o < outF; o++)
                    for (int i = 0; i < inF; i++)
                    {
                        double sum = 0;
                        for (int k = 0; k < r; k++) sum += (double)b[o * r + k] * a[k * inF + i];
                        w[o * inF + i] += (float)(lora.Scale * sum);
                    }
                targets[p].CopyFrom(w);
            }
        }
        return (merged, new LlamaModel(merged, ft.Rope));
    }

    /// <summary>Log-probabilities of each token after the previous one from logits [T, vocab] (NaN for the first).</summary>
    public static double[] LogProbsOf(float[] logits, int[] ids)
    {
        var result = new double[ids.Length];
        LogProbs.OfChunk(default, logits, Vocab, ids, result);
        return result;
    }

    public static float[] ModelLogits(LlamaModel model, int[] ids)
    {
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        return model.Forward(tape, ids).Value.ToArray();
    }

    public static float[] FinetunedLogits(FinetuneMethod method, int[] ids, Func<int, AttentionMask> mask)
    {
        using var tape = new Tape(method.Base.Accelerator);
        using var _ = tape.NoGrad();
        return method.Model.Logits(tape, ids, mask).Value.ToArray();
    }

    /// <summary>Feeds ids in uneven pieces and returns the session's log-probabilities.</summary>
    public static double[] Stream(ILongContextSession session, int[] ids)
    {
        var result = new List<double>();
        int[] pieces = [5, 1, 17, 3];
        for (int done = 0, k = 0; done < ids.Length; k++)
        {
            int take = Math.Min(pieces[k % pieces.Length], ids.Length - done);
            result.AddRange(session.Feed(ids.AsSpan(done, take)));
            done += take;
        }
        return [.. result];
    }

    public static void AssertClose(double[] expected, double[] actual, double tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        Assert.True(double.IsNaN(expected[0]) && double.IsNaN(actual[0]), $"{what}: the first token has no context");
        for (int t = 1; t < expected.Length; t++)
            Assert.True(Math.Abs(expected[t] - actual[t]) <= tol, $"{what}: token {t}: expected {expected[t]:G6}, got {actual[t]:G6}");
    }

    public static double MaxDifference(double[] a, double[] b)
    {
        double max = 0;
        for (int t = 1; t < a.Length; t++) max = Math.Max(max, Math.Abs(a[t] - b[t]));
        return max;
    }

    /// <summary>A document made of one random pattern repeated: learnable from the context.</summary>
    public static int[] RepeatedPattern(int seed, int pattern, int length)
    {
        var p = new Rng(seed).Ints(pattern, 0, Vocab);
        return Enumerable.Range(0, length).Select(i => p[i % pattern]).ToArray();
    }

    /// <summary>A few AdamW steps on one document; returns the first and last loss.</summary>
    public static (double First, double Last) Train(ITrainableMethod method, int[] document, int steps, float lr)
    {
        using var optimizer = new AdamW(method.Parameters, new AdamWSettings(WeightDecay: 0f));
        int[] targets = document[1..];
        double first = 0, last = 0;
        for (int step = 0; step < steps; step++)
        {
            foreach (var p in method.Parameters) p.Parameter.ZeroGrad();
            var loss = method.Accumulate(document, targets, step);
            optimizer.Step(lr);
            last = loss.Loss / loss.Units;
            if (step == 0) first = last;
        }
        return (first, last);
    }

    private static readonly Lock registration = new();

    /// <summary>Registers a descriptor unless the registry already has it (the application registers these methods itself).</summary>
    public static void EnsureRegistered(TrainableMethodDescriptor descriptor)
    {
        lock (registration)
            if (!TrainableMethods.All.Any(d => d.Name == descriptor.Name)) TrainableMethods.Register(descriptor);
    }

    /// <summary>Rebuilds the method from the adapter folder alone (its recorded name and options) and checks it scores a document as <paramref name="saved"/> does.</summary>
    public static void CheckRebuiltFromFolder(FinetuneMethod saved, string folder, int[] document)
    {
        using var rebuilt = TrainableMethods.Load(saved.Base, folder);
        Assert.Equal(saved.Name, rebuilt.Name);
        var typed = Assert.IsAssignableFrom<FinetuneMethod>(rebuilt);
        Assert.Equal(saved.Options, typed.Options);
        Assert.Equal(saved.Loss(document, document[1..]), typed.Loss(document, document[1..]));
    }

    public static string TempFolder(string what)
    {
        string folder = Path.Combine(Path.GetTempPath(), $"uiollm-{what}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        return folder;
    }
}
