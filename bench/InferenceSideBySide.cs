using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;

namespace UioLlm.Bench;

/// <summary>
/// CPU inference speed: decode tokens/s (greedy from BOS through the whole context, as llama2.c's run.c
/// reports it) and prefill tokens/s (one pass over a prompt), for the real stories260K model and a
/// randomly initialised model of the stories15M shape, at each thread count.
/// </summary>
internal static class InferenceSideBySide
{
    /// <summary>llama2.c run.c (gcc -Ofast -fopenmp -march=native) on this machine, tokens/s, from the issue.</summary>
    private static readonly Dictionary<(string, int), double> RunC = new()
    {
        [("stories15M shape", 1)] = 330, [("stories15M shape", 2)] = 680,
        [("stories260K", 1)] = 13000, [("stories260K", 2)] = 13000,
    };

    public static void Run(TextWriter output, bool quick, IReadOnlyList<int>? threadCounts)
    {
        threadCounts ??= [1, 2];
        int repeats = quick ? 2 : 5;
        output.WriteLine($"CPU: {CpuAccelerator.SimdDescription}; {Environment.ProcessorCount} logical cores; best of {repeats} runs");
        output.WriteLine($"{"model",-18} {"thr",3} {"decode tok/s",13} {"run.c",7} {"ratio",6} {"prefill tok/s",14} {"prompt",7}");
        string? stories = BenchData.Find("models", "stories260K", "stories260K.bin");
        if (stories is null) output.WriteLine("stories260K: not found (set UIOLLM_DATA to the shared data folder); skipped");
        foreach (int threads in threadCounts)
        {
            using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads);
            if (stories is not null)
            {
                using var w = Llama2cCheckpoint.Load(stories, accelerator);
                Measure(output, "stories260K", w, threads, repeats);
            }
            using var random = LlamaWeights.Random(accelerator, LlamaConfig.Stories15MShape, seed: 1);
            Measure(output, "stories15M shape", random, threads, repeats);
        }
    }

    private static void Measure(TextWriter output, string name, LlamaWeights weights, int threads, int repeats)
    {
        var model = new LlamaModel(weights);
        int steps = Math.Min(256, model.Config.MaxSeqLen);   // run.c default -n 256
        var generator = new Generator(model);
        var options = new GenerationOptions { MaxNewTokens = steps - 1, StopTokens = [] };
        double decode = 0;
        for (int r = 0; r <= repeats; r++)
        {
            var result = generator.Generate([model.Config.BosId], options);
            // run.c's figure: tokens after the first, over the time from the first step's end.
            double rate = (result.Tokens.Length - 1) / result.Decode.TotalSeconds;
            if (r > 0) decode = Math.Max(decode, rate);   // run 0 warms up
        }

        int promptLength = Math.Min(128, model.Config.MaxSeqLen);
        var prompt = new int[promptLength];
        var rng = new Random(5);
        for (int i = 0; i < prompt.Length; i++) prompt[i] = rng.Next(model.Config.VocabSize);
        double prefill = 0;
        using var buffers = model.NewInferenceBuffers(promptLength);
        using var cache = model.NewCache(promptLength);
        for (int r = 0; r <= repeats; r++)
        {
            cache.Clear();
            var clock = Stopwatch.StartNew();
            model.Infer(prompt, cache, buffers);
            double rate = promptLength / clock.Elapsed.TotalSeconds;
            if (r > 0) prefill = Math.Max(prefill, rate);
        }
        double reference = RunC[(name, threads)];
        output.WriteLine($"{name,-18} {threads,3} {decode,13:F0} {reference,7:F0} {decode / reference,6:F2} {prefill,14:F0} {promptLength,7}");
    }
}
