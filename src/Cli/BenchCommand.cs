using System.Diagnostics;
using System.Text.Json;
using Spectre.Console;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training;
using UioLlm.Training.Compare;
using UioLlm.Training.Methods;
using UioLlm.Training.Estimators;

namespace UioLlm.Cli;

/// <summary>
/// `uio bench`: the kernel table, end-to-end inference (decode and prefill tokens/s) and a UIO training
/// step on this machine, printed as tables and optionally written as JSON for tools. The fuller
/// side-by-side comparisons (OpenBLAS, the C reference, estimator statistics) live in bench/.
/// </summary>
internal static class BenchCommand
{
    /// <summary>The suites; "all" runs the first three ("methods" takes minutes and runs only when named).</summary>
    public static readonly string[] Suites = ["kernels", "inference", "training", "methods", "all"];

    public sealed record InferenceResult(string Model, int Threads, double DecodeTokensPerSecond, double PrefillTokensPerSecond);
    public sealed record TrainingResult(string Setup, int Threads, double SecondsPerStep, double DecoderTokensPerSecond);
    public sealed record Report(string Machine, List<KernelsCommand.KernelResult> Kernels, List<InferenceResult> Inference, List<TrainingResult> Training,
        List<MethodStepTime> Methods);

    public static int Run(string suite, string? json, int threads, bool quick, TextWriter output, TextWriter error) => CliSupport.Guarded("bench", error, () =>
    {
        if (!Suites.Contains(suite)) throw new UsageException($"suite must be one of {string.Join(", ", Suites)}, got '{suite}'");
        if (threads < 0) throw new UsageException($"--threads must be 0 (all cores) or a positive number, got {threads}");
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output) });
        console.Profile.Width = Math.Max(console.Profile.Width, 160);
        using var acc = Accelerator.Create(AcceleratorKind.Auto, threads);
        var report = new Report(acc.Description, [], [], [], []);
        console.MarkupLineInterpolated($"[bold]uio bench[/] {suite} on {acc.Description}{(quick ? " (quick)" : "")}");
        bool all = suite == "all";

        if (all || suite == "kernels")
        {
            report.Kernels.AddRange(KernelsCommand.MeasureAll(acc, quick));
            var table = new Table().AddColumns("kernel", "shape", "ms", "GFLOP/s");
            foreach (var r in report.Kernels) table.AddRow(r.Kernel, r.Shape, r.Milliseconds.ToString("F2"), r.GigaflopsPerSecond.ToString("F1"));
            console.Write(table);
        }
        if (all || suite == "inference")
        {
            string? stories = CliSupport.FindData("models", "stories260K", "stories260K.bin");
            if (stories is not null)
            {
                using var w = Llama2cCheckpoint.Load(stories, acc);
                report.Inference.Add(Inference("stories260K", w, quick));
            }
            using (var w = LlamaWeights.Random(acc, LlamaConfig.Stories15MShape, seed: 1))
                report.Inference.Add(Inference("stories15M shape (random)", w, quick));
            var table = new Table().AddColumns("model", "decode tok/s", "prefill tok/s");
            foreach (var r in report.Inference) table.AddRow(Markup.Escape(r.Model), r.DecodeTokensPerSecond.ToString("F0"), r.PrefillTokensPerSecond.ToString("F0"));
            console.Write(table);
        }
        if (all || suite == "training")
        {
            report.Training.Add(Training(acc, quick));
            var table = new Table().AddColumns("UIO training step", "s/step", "decoder tok/s");
            foreach (var r in report.Training) table.AddRow(Markup.Escape(r.Setup), r.SecondsPerStep.ToString("F3"), r.DecoderTokensPerSecond.ToString("F0"));
            console.Write(table);
        }
        if (suite == "methods")
        {
            var shape = quick ? new MethodStepBenchmark.Shape(Window: 16, Dim: 16, Layers: 2, Heads: 2, HiddenDim: 32, Vocab: 64, SegmentLength: 8, DocumentWindows: 2, LongestWindows: 4, Rank: 4)
                : new MethodStepBenchmark.Shape();
            int documents = quick ? 2 : 8, rounds = quick ? 1 : 5;
            string[] names = ["uio", .. TrainableMethods.All.Select(m => m.Name)];
            console.WriteLine($"every trained method's step side by side: random base d={shape.Dim}, {shape.Layers} layers, window {shape.Window}, vocab {shape.Vocab}; " +
                $"{documents} documents of {shape.DocumentWindows} windows a step, one after another; {rounds} interleaved rounds after a warm-up, median");
            report.Methods.AddRange(MethodStepBenchmark.Run(acc, shape, names, documents, rounds));
            var table = new Table().AddColumns("method (spec)", "trainable", "s/step (median)", "min", "max");
            foreach (var r in report.Methods)
                table.AddRow(r.Failure is null
                    ? [Markup.Escape(r.Spec), r.TrainableParameters.ToString("N0"), r.SecondsPerStep.ToString("F3"), r.MinSeconds.ToString("F3"), r.MaxSeconds.ToString("F3")]
                    : [Markup.Escape(r.Spec), "-", Markup.Escape(r.Failure), "", ""]);
            console.Write(table);
        }
        if (json is not null)
        {
            AtomicFile.WriteText(json, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
            console.MarkupLineInterpolated($"wrote {json}");
        }
        return 0;
    });

    private static InferenceResult Inference(string name, LlamaWeights weights, bool quick)
    {
        var model = new LlamaModel(weights);
        int steps = Math.Min(quick ? 64 : 256, model.Config.MaxSeqLen);
        var generator = new Generator(model);
        var options = new GenerationOptions { MaxNewTokens = steps - 1, StopTokens = [] };
        double decode = 0;
        for (int r = 0; r < (quick ? 2 : 4); r++)
        {
            var result = generator.Generate([model.Config.BosId], options);
            if (r > 0) decode = Math.Max(decode, result.DecodeTokensPerSecond);   // run 0 warms up
        }
        int promptLength = Math.Min(128, model.Config.MaxSeqLen);
        var prompt = Enumerable.Range(0, promptLength).Select(i => (i * 7919) % model.Config.VocabSize).ToArray();
        using var buffers = model.NewInferenceBuffers(promptLength);
        using var cache = model.NewCache(promptLength);
        double prefill = 0;
        for (int r = 0; r < 3; r++)
        {
            cache.Clear();
            var clock = Stopwatch.StartNew();
            model.Infer(prompt, cache, buffers);
            if (r > 0) prefill = Math.Max(prefill, promptLength / clock.Elapsed.TotalSeconds);
        }
        return new InferenceResult(name, weights.Accelerator is UioLlm.Kernels.Cpu.CpuAccelerator cpu ? cpu.Threads : 0, decode, prefill);
    }

    private static TrainingResult Training(Accelerator acc, bool quick)
    {
        int l = quick ? 64 : 256, segments = 4;
        double best = StepBenchmark.BestSeconds(acc, l, segments);
        return new TrainingResult($"stories15M shape, l={l} n={l / 8}, {segments} segments, unbiased S=2",
            acc is UioLlm.Kernels.Cpu.CpuAccelerator cpu ? cpu.Threads : 0, best, segments * l / best);
    }
}
