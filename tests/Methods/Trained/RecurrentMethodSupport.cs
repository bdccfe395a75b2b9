using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Methods;
using UioLlm.Training.Optim;

namespace UioLlm.Tests.Methods.Trained;

/// <summary>What the trained-method tests share: a tiny frozen base, non-zero adapters, documents, a training loop, temporary folders.</summary>
internal static class RecurrentMethodSupport
{
    public const int Vocab = 37;

    /// <summary>A tiny frozen base (window 64) with seeded weights; dispose the weights.</summary>
    public static (LlamaWeights Weights, LlamaModel Model) Base(int seed)
    {
        var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed);
        return (weights, new LlamaModel(weights));
    }

    /// <summary>Gives every parameter seeded values: LoRA B non-zero (a fresh adapter is an exact no-op), the rest perturbed.</summary>
    public static void Randomise(ITrainableMethod method, int seed, float std = 0.3f)
    {
        var rng = new Rng(seed);
        foreach (var (p, _) in method.Parameters)
        {
            var v = p.Value.ToArray();
            var noise = rng.Normal(v.Length, std);
            bool isB = p.Name!.Contains("lora_B", StringComparison.Ordinal);
            for (int i = 0; i < v.Length; i++) v[i] = isB ? noise[i] : v[i] + 0.1f * noise[i];
            p.Value.CopyFrom(v);
        }
    }

    public static void ZeroGrads(ITrainableMethod method)
    {
        foreach (var (p, _) in method.Parameters) p.ZeroGrad();
    }

    public static float[][] Grads(ITrainableMethod method) => method.Parameters.Select(p => p.Parameter.Grad?.ToArray() ?? new float[p.Parameter.Value.Length]).ToArray();

    public static float[][] Values(ITrainableMethod method) => method.Parameters.Select(p => p.Parameter.Value.ToArray()).ToArray();

    /// <summary>Targets of a document: the next token, with the listed positions unscored.</summary>
    public static int[] Targets(int[] document, params int[] unscored)
    {
        var targets = document[1..];
        foreach (int i in unscored) targets[i] = -100;
        return targets;
    }

    /// <summary>sum over segments of the mean of -log p of the segment's scored targets, from a session's log-probabilities of the document.</summary>
    public static double SegmentLossFromLogProbs(double[] logProbs, int[] targets, int segment)
    {
        double total = 0;
        for (int start = 0; start < targets.Length; start += segment)
        {
            double sum = 0;
            int count = 0;
            for (int i = start; i < Math.Min(targets.Length, start + segment); i++)
            {
                if (targets[i] == -100) continue;
                sum -= logProbs[i + 1];
                count++;
            }
            if (count > 0) total += sum / count;
        }
        return total;
    }

    /// <summary>Feeds a document to a session in uneven pieces and returns every token's log-probability.</summary>
    public static double[] FeedInPieces(ILongContextSession session, int[] document, params int[] pieces)
    {
        var result = new List<double>();
        int done = 0, k = 0;
        while (done < document.Length)
        {
            int take = Math.Min(pieces[k++ % pieces.Length], document.Length - done);
            result.AddRange(session.Feed(document.AsSpan(done, take)));
            done += take;
        }
        return [.. result];
    }

    /// <summary>Documents made of a random pattern of <paramref name="period"/> tokens repeated: later segments are predictable from earlier ones.</summary>
    public static int[][] RepetitiveDocuments(int seed, int count, int period, int length)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var pattern = rng.Ints(period, 0, Vocab);
            return Enumerable.Range(0, length).Select(i => pattern[i % period]).ToArray();
        }).ToArray();
    }

    /// <summary>Mean loss per unit of a method over documents, without gradients.</summary>
    public static double MeanLoss(Func<int[], int[], DocumentLoss> evaluate, int[][] documents)
    {
        double loss = 0;
        int units = 0;
        foreach (var d in documents)
        {
            var r = evaluate(d, d[1..]);
            loss += r.Loss;
            units += r.Units;
        }
        return loss / units;
    }

    /// <summary>Plain AdamW over the method's parameters: each step accumulates every document, then one update.</summary>
    public static void Train(ITrainableMethod method, int[][] documents, int steps, float learningRate)
    {
        using var optimizer = new AdamW(method.Parameters, new AdamWSettings(WeightDecay: 0f));
        for (int step = 0; step < steps; step++)
        {
            ZeroGrads(method);
            foreach (var d in documents) method.Accumulate(d, d[1..], step);
            optimizer.Step(learningRate);
        }
    }

    public static string TempFolder(string name) => Path.Combine(Path.GetTempPath(), $"uiollm-trained-{name}-{Guid.NewGuid():N}");

    public static double MaxAbsDiff(float[] a, float[] b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        return m;
    }

    /// <summary>Logits rows of final-normed states.</summary>
    public static float[] Logits(LlamaModel model, Tape tape, Var hidden) => model.Head.Forward(tape, hidden).Value.ToArray();
}
