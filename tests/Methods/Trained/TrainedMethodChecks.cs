using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using UioLlm.Training.Optim;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>Checks every trained method's tests share: gradients, adapters, session against training, a short fit.</summary>
internal static class TrainedMethodChecks
{
    /// <summary>A tiny frozen base (GradCheck.TinyConfig: dim 16, 2 layers, vocab 37, window 64) with seeded weights.</summary>
    public static (LlamaWeights Weights, LlamaModel Model) TinyBase(int seed)
    {
        var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed);
        return (weights, new LlamaModel(weights));
    }

    /// <summary>Gives every LoRA B a seeded non-zero value (fresh adapters are exact no-ops, which would hide wrong routing).</summary>
    public static void RandomiseLoraB(ITrainableMethod method, int seed, float std = 0.3f)
    {
        var rng = new Rng(seed);
        foreach (var p in method.Parameters.Select(p => p.Parameter).Where(p => p.Name!.Contains("lora_B", StringComparison.Ordinal)))
            p.Value.CopyFrom(rng.Normal(p.Value.Length, std));
    }

    public static void ZeroGrads(ITrainableMethod method)
    {
        foreach (var p in method.Parameters) p.Parameter.ZeroGrad();
    }

    /// <summary>Accumulate's gradient of every parameter tensor against central finite differences of <paramref name="loss"/>.</summary>
    public static void GradientsMatchFiniteDifferences(ITrainableMethod method, int[] document, int[] targets, Func<double> loss, string what, double eps = 1e-2)
    {
        ZeroGrads(method);
        var result = method.Accumulate(document, targets, seed: 0);
        Assert.True(result.Units > 0 && double.IsFinite(result.Loss), $"{what}: nothing scored");
        Assert.Equal(result.Loss, loss(), 5);
        var parameters = method.Parameters.Select(p => p.Parameter).ToList();
        Assert.All(parameters, p => Assert.True(p.Grad is not null && p.Grad.ToArray().Any(v => v != 0), $"{what}: {p.Name} received no gradient"));
        GradCheck.PerTensor(loss, parameters, new Rng(11), eps, 3e-2, what);
    }

    /// <summary>
    /// Save, load into a fresh method of the same options (different seed): every parameter equal; a foreign adapter
    /// and an adapter of other options are refused with <see cref="ModelFormatException"/>.
    /// </summary>
    public static void AdapterRoundTrip(ITrainableMethod trained, Func<int, ITrainableMethod> freshSameOptions, ITrainableMethod foreign, ITrainableMethod otherOptions)
    {
        string root = Path.Combine(Path.GetTempPath(), "uiollm-trained-" + Guid.NewGuid().ToString("N"));
        try
        {
            string mine = Path.Combine(root, "mine"), theirs = Path.Combine(root, "foreign"), other = Path.Combine(root, "other");
            trained.SaveAdapter(mine, "tiny");
            using (var fresh = freshSameOptions(99))
            {
                var before = fresh.Parameters.Select(p => p.Parameter.Value.ToArray()).ToList();
                Assert.Contains(before.Zip(trained.Parameters), pair => !pair.First.SequenceEqual(pair.Second.Parameter.Value.ToArray()));
                fresh.LoadAdapter(mine);
                foreach (var (a, b) in fresh.Parameters.Zip(trained.Parameters))
                {
                    Assert.Equal(b.Parameter.Name, a.Parameter.Name);
                    Assert.Equal(b.Parameter.Value.ToArray(), a.Parameter.Value.ToArray());
                }
                foreign.SaveAdapter(theirs);
                var e = Assert.Throws<ModelFormatException>(() => fresh.LoadAdapter(theirs));
                Assert.Contains($"'{foreign.Name}' adapter", e.Message, StringComparison.Ordinal);
                otherOptions.SaveAdapter(other);
                e = Assert.Throws<ModelFormatException>(() => fresh.LoadAdapter(other));
                Assert.Contains("options", e.Message, StringComparison.Ordinal);
                Assert.Throws<ModelFormatException>(() => fresh.LoadAdapter(Path.Combine(root, "missing")));
            }
            var recorded = TrainableMethods.ReadAdapterMethod(mine);
            Assert.NotNull(recorded);
            Assert.Equal(trained.Name, recorded.Value.Method);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>
    /// The session's log-probabilities, fed in uneven pieces, rebuilt into the training loss: per segment of
    /// <paramref name="segment"/> input positions, the mean of -log p over scored targets, summed.
    /// </summary>
    public static double SessionLoss(ILongContextSession session, int[] document, int[] targets, int segment, out double[] logProbs)
    {
        var all = new List<double>();
        int[] pieces = [1, 3, 2, 7, 5];
        for (int at = 0, i = 0; at < document.Length; i++)
        {
            int n = Math.Min(pieces[i % pieces.Length], document.Length - at);
            all.AddRange(session.Feed(document.AsSpan(at, n)));
            at += n;
        }
        logProbs = [.. all];
        Assert.True(double.IsNaN(logProbs[0]));
        double loss = 0;
        for (int start = 0; start < targets.Length; start += segment)
        {
            double sum = 0;
            int count = 0;
            for (int t = start; t < Math.Min(start + segment, targets.Length); t++)
            {
                if (targets[t] == -100) continue;
                Assert.Equal(document[t + 1], targets[t]);
                sum -= logProbs[t + 1];
                count++;
            }
            if (count > 0) loss += sum / count;
        }
        return loss;
    }

    /// <summary>
    /// Greedy generation after a fed document (token by token, across a segment boundary) leaves the session where a
    /// fresh session fed the document and the generated tokens at once ends: the same last logits.
    /// </summary>
    public static void GenerationContinuesTheStream(ITrainableMethod method, ILongContextSession session, int[] document, int newTokens)
    {
        var generated = session.Generate(new UioLlm.Model.Generation.GenerationOptions { MaxNewTokens = newTokens, StopTokens = [] });
        Assert.Equal(newTokens, generated.Tokens.Length);
        Assert.Equal(document.Length + newTokens, session.TokensSeen);
        using var fresh = method.OpenSession();
        fresh.Feed([.. document, .. generated.Tokens]);
        Check.Close(fresh.LastLogits, session.LastLogits, 1e-5, 1e-4, "logits after generation against one feed");
    }

    /// <summary>Next-token targets of a document with some positions unscored.</summary>
    public static int[] Targets(int[] document, params int[] unscored)
    {
        var targets = document[1..];
        foreach (int u in unscored) targets[u] = -100;
        return targets;
    }

    /// <summary>AdamW over the method's parameters on a fixed set of documents; returns the mean loss per unit before and after.</summary>
    public static (double Before, double After) Fit(ITrainableMethod method, int[][] documents, int steps, float lr)
    {
        double Mean()
        {
            double loss = 0;
            int units = 0;
            foreach (var d in documents)
            {
                ZeroGrads(method);
                var r = method.Accumulate(d, d[1..], seed: 0);
                loss += r.Loss;
                units += r.Units;
            }
            return loss / units;
        }
        double before = Mean();
        using var optimizer = new AdamW(method.Parameters, new AdamWSettings(WeightDecay: 0f));
        for (int step = 0; step < steps; step++)
        {
            ZeroGrads(method);
            int units = 0;
            foreach (var d in documents) units += method.Accumulate(d, d[1..], seed: step).Units;
            foreach (var p in method.Parameters) method.Base.Accelerator.Kernels.Scale(p.Parameter.Grad!, 1f / units, p.Parameter.Grad!);
            optimizer.Step(lr);
        }
        return (before, Mean());
    }
}
