using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;

namespace UioLlm.Bench;

/// <summary>What the training runners share: small models, non-zero adapters, documents, flattened gradients.</summary>
internal static class TrainingBenchSupport
{
    /// <summary>stories260K's shape (dim 64, 5 layers, 8 heads / 4 KV heads, vocabulary 512), used when the real file is absent.</summary>
    public static LlamaConfig Stories260KShape => new()
    {
        Dim = 64, HiddenDim = 172, Layers = 5, Heads = 8, KvHeads = 4, VocabSize = 512, MaxSeqLen = 512,
    };

    /// <summary>The real stories260K model when the shared data holds it, else random weights of its shape; with a description.</summary>
    public static (LlamaWeights Weights, string Description) SmallModel(Accelerator accelerator)
    {
        string? path = BenchData.Find("models", "stories260K", "stories260K.bin");
        if (path is not null) return (Llama2cCheckpoint.Load(path, accelerator), "stories260K (real weights)");
        return (LlamaWeights.Random(accelerator, Stories260KShape, seed: 1),
            "stories260K shape, random weights (stories260K.bin not found; set UIOLLM_DATA)");
    }

    /// <summary>
    /// Token ids to cut documents from: Moby Dick tokenized with stories260K's tok512.bin when both are
    /// present, else uniform random ids below <paramref name="vocab"/>.
    /// </summary>
    public static (int[] Ids, string Description) Corpus(int vocab, int minimumTokens, int seed)
    {
        string? text = BenchData.Find("text", "moby_dick.txt");
        string? tokenizer = BenchData.Find("models", "stories260K", "tok512.bin");
        if (text is not null && tokenizer is not null && vocab == 512)
        {
            var ids = Tokenizer.Load(tokenizer).Encode(File.ReadAllText(text));
            if (ids.Length >= minimumTokens) return (ids, $"Moby Dick, tok512 ({ids.Length} tokens)");
        }
        var rng = new Random(seed);
        var random = new int[minimumTokens];
        for (int i = 0; i < random.Length; i++) random[i] = rng.Next(vocab);
        return (random, "uniform random ids");
    }

    /// <summary>Gives every LoRA B a seeded normal value (fresh adapters are exact no-ops and pass no gradient to A).</summary>
    public static void RandomiseAdapters(UioModel uio, int seed, double std)
    {
        var rng = new Random(seed);
        foreach (var layer in uio.Layers)
            foreach (var (_, lora) in layer.All())
            {
                var b = new float[lora.B.Value.Length];
                for (int i = 0; i < b.Length; i++) b[i] = (float)(std * Normal(rng));
                lora.B.Value.CopyFrom(b);
            }
    }

    private static double Normal(Random rng)
    {
        double u = 1 - rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * rng.NextDouble());
    }

    /// <summary>The estimator's gradient of <paramref name="parameters"/> for one document, flattened (gradients zeroed first).</summary>
    public static double[] Gradient(UioModel uio, IGradientEstimator estimator, ReadOnlySpan<int> document, IReadOnlyList<Var> parameters)
    {
        foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
        estimator.Accumulate(uio, document);
        var flat = new List<double>();
        foreach (var p in parameters)
            foreach (float v in p.Grad!.ToArray()) flat.Add(v);
        return [.. flat];
    }

    public static double Norm(double[] v)
    {
        double s = 0;
        foreach (double x in v) s += x * x;
        return Math.Sqrt(s);
    }

    public static double Cosine(double[] a, double[] b)
    {
        double dot = 0;
        for (int i = 0; i < a.Length; i++) dot += a[i] * b[i];
        return dot / (Norm(a) * Norm(b));
    }

    /// <summary>Mean and (unbiased) variance of a sample.</summary>
    public static (double Mean, double Variance) MeanVariance(IReadOnlyList<double> values)
    {
        double mean = values.Average();
        double variance = values.Count > 1 ? values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1) : 0;
        return (mean, variance);
    }
}
