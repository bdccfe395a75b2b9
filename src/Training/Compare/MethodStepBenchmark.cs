using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Methods;
using UioLlm.Training.Methods.Uio;

namespace UioLlm.Training.Compare;

/// <summary>One method's training-step time in <see cref="MethodStepBenchmark"/>.</summary>
/// <param name="SecondsPerStep">Median over the timed rounds of one step's gradient (every document of the step, one after another).</param>
/// <param name="Failure">Why the method could not run on the benchmark's base (null when it ran).</param>
public sealed record MethodStepTime(string Method, string Spec, long TrainableParameters, double SecondsPerStep, double MinSeconds, double MaxSeconds, string? Failure = null);

/// <summary>
/// Every trained method's training step side by side in one process, on one random base of the comparisons' shape
/// (every layer global, so every method runs), with the same random documents: rounds are interleaved (round r times
/// every method once, in turn), so drift of the machine's speed hits all methods alike; the median round is reported.
/// A step is the gradient of <paramref name="documentsPerStep"/> documents (no optimizer update: the same for all).
/// </summary>
public static class MethodStepBenchmark
{
    public sealed record Shape(int Window = 64, int Dim = 128, int Layers = 4, int Heads = 4, int HiddenDim = 256, int Vocab = 512, int SegmentLength = 32,
        int MemoryTokens = 1, int DocumentWindows = 4, int LongestWindows = 16, int Rank = 32);

    public static List<MethodStepTime> Run(Accelerator accelerator, Shape shape, IReadOnlyList<string> names, int documentsPerStep, int rounds,
        IProgress<(int Round, string Method)>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentOutOfRangeException.ThrowIfLessThan(documentsPerStep, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        var config = new LlamaConfig
        {
            Dim = shape.Dim, HiddenDim = shape.HiddenDim, Layers = shape.Layers, Heads = shape.Heads, KvHeads = shape.Heads, VocabSize = shape.Vocab,
            MaxSeqLen = shape.Window, TiedEmbeddings = true, BosId = 1, EosId = 2,
        };
        using var weights = LlamaWeights.Random(accelerator, config, seed: 1, scale: 0.05f);
        var model = new LlamaModel(weights);
        var random = new Random(2);
        int length = shape.DocumentWindows * shape.Window + 1;
        var documents = Enumerable.Range(0, documentsPerStep).Select(_ => Enumerable.Range(0, length).Select(_ => random.Next(3, shape.Vocab)).ToArray()).ToList();
        var methods = new List<(string Name, string Spec, ITrainableMethod? Method, string? Failure)>();
        try
        {
            foreach (var name in names)
            {
                string spec = MethodSpecs.Default(name, shape.Window, shape.SegmentLength, shape.MemoryTokens, (long)shape.LongestWindows * shape.Window);
                try
                {
                    methods.Add((name, spec, Create(model, shape, spec), null));
                }
                catch (ArgumentException e)
                {
                    methods.Add((name, spec, null, e.Message));
                }
            }
            var times = methods.Select(_ => new List<double>()).ToList();
            for (int round = 0; round <= rounds; round++)   // round 0 warms up (JIT, scratch pools)
            {
                for (int m = 0; m < methods.Count; m++)
                {
                    if (methods[m].Method is not { } method) continue;
                    progress?.Report((round, methods[m].Name));
                    foreach (var p in method.Parameters) p.Parameter.ZeroGrad();
                    accelerator.Synchronize();
                    var clock = Stopwatch.StartNew();
                    for (int d = 0; d < documents.Count; d++) method.Accumulate(documents[d], documents[d].AsSpan(1), seed: round * 1000 + d);
                    accelerator.Synchronize();
                    if (round > 0) times[m].Add(clock.Elapsed.TotalSeconds);
                }
            }
            return methods.Select((m, i) =>
            {
                if (m.Method is null) return new MethodStepTime(m.Name, m.Spec, 0, double.NaN, double.NaN, double.NaN, m.Failure);
                var sorted = times[i].Order().ToList();
                return new MethodStepTime(m.Name, m.Spec, m.Method.Parameters.Sum(p => (long)p.Parameter.Value.Length), sorted[sorted.Count / 2], sorted[0], sorted[^1]);
            }).ToList();
        }
        finally
        {
            foreach (var m in methods) m.Method?.Dispose();
        }
    }

    private static ITrainableMethod Create(LlamaModel model, Shape shape, string spec)
    {
        if (spec != "uio") return TrainableMethods.Create(spec, model, seed: 3);
        return UioTrainable.Unbiased(model, new UioConfig
        {
            SegmentLength = shape.SegmentLength, MemoryTokens = shape.MemoryTokens, EncoderRank = shape.Rank, EncoderAlpha = 2 * shape.Rank, TransferRank = shape.Rank, TransferAlpha = 2 * shape.Rank,
            AllowExtrapolation = true,
        }, reservoir: 2, seed: 3);
    }
}
