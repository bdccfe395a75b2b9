using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using UioLlm.Kernels;
using UioLlm.Kernels.Cpu;
using UioLlm.Kernels.Quantization;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;

namespace UioLlm.Bench;

/// <summary>
/// CPU inference speed, with every peer measured in the same run (nothing is quoted from elsewhere):
/// 1. float32: decode tokens/s (greedy from BOS through 256 positions, tokens after the first over the time from
///    the first step's end, as llama2.c's run.c reports it) and prefill tokens/s (one pass over a 128-token
///    prompt) for the real stories260K and a random model of the stories15M shape; with <c>--runc PATH</c> (a
///    compiled llama2.c run.c) run.c's decode on the same checkpoints, interleaved with ours.
/// 2. quantised weights: decode tokens/s of a random model of the stories110M shape (every row a multiple of
///    256, so all K-quants apply; --quick: dim 256, 4 layers) in float32 and with its
///    matrices kept Q8_0, Q4_0 or Q4_K. With <c>--llama-cpp DIR</c> (llama.cpp's build/bin) the models are GGUF
///    files made by llama.cpp itself (llama-convert-llama2c-to-ggml, llama-quantize: F32, Q8_0, Q4_0, Q4_K_M),
///    read by both engines, and llama-bench's tg256 on the same file and thread count is the peer column;
///    without it our own quantisers make the weights and the peer column stays empty.
/// </summary>
internal static class InferenceSideBySide
{
    private const int Steps = 256;

    public static void Run(TextWriter output, bool quick, IReadOnlyList<int>? threadCounts, string? runc = null, string? llamaCpp = null,
        string? work = null)
    {
        threadCounts ??= [1, 2];
        int repeats = quick ? 2 : 5;
        work ??= Path.Combine(Path.GetTempPath(), "uiollm-bench-inference");
        Directory.CreateDirectory(work);
        output.WriteLine($"CPU: {CpuAccelerator.SimdDescription}; {Environment.ProcessorCount} logical cores; best of {repeats} runs; work folder {work}");
        FloatTable(output, repeats, threadCounts, runc, work);
        output.WriteLine();
        QuantizedTable(output, quick, Math.Max(2, repeats - 2), threadCounts, llamaCpp, work);
    }

    private static void FloatTable(TextWriter output, int repeats, IReadOnlyList<int> threadCounts, string? runc, string work)
    {
        output.WriteLine("float32 weights" + (runc is null ? " (run.c column: pass --runc PATH to a compiled llama2.c run.c)" : $" vs run.c ({runc})"));
        output.WriteLine($"{"model",-18} {"thr",3} {"decode tok/s",13} {"run.c",8} {"ratio",6} {"prefill tok/s",14} {"prompt",7}");
        string? stories = BenchData.Find("models", "stories260K", "stories260K.bin");
        string? storiesTok = BenchData.Find("models", "stories260K", "tok512.bin");
        string? llamaTok = BenchData.Find("tokenizers", "llama2", "tokenizer.bin");
        if (stories is null) output.WriteLine("stories260K: not found (set UIOLLM_DATA to the shared data folder); skipped");
        string random15M = Path.Combine(work, "stories15M-shape-random.bin");
        using (var cpu = Accelerator.Create(AcceleratorKind.Cpu, 1))
        using (var w = LlamaWeights.Random(cpu, LlamaConfig.Stories15MShape, seed: 1))
            if (!File.Exists(random15M)) Llama2cCheckpoint.Save(w, random15M);
        foreach (int threads in threadCounts)
        {
            using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads);
            if (stories is not null)
            {
                using var w = Llama2cCheckpoint.Load(stories, accelerator);
                var (decode, prefill, prompt) = Measure(w, repeats);
                double? c = runc is null ? null : RunC(runc, stories, storiesTok!, threads, repeats);
                Row(output, "stories260K", threads, decode, c, prefill, prompt);
            }
            using (var w = Llama2cCheckpoint.Load(random15M, accelerator))
            {
                var (decode, prefill, prompt) = Measure(w, repeats);
                double? c = runc is null || llamaTok is null ? null : RunC(runc, random15M, llamaTok, threads, repeats);
                Row(output, "stories15M shape", threads, decode, c, prefill, prompt);
            }
        }
    }

    private static void Row(TextWriter output, string name, int threads, double decode, double? peer, double prefill, int prompt) =>
        output.WriteLine($"{name,-18} {threads,3} {decode,13:F0} {Peer(peer),8} {Ratio(decode, peer),6} {prefill,14:F0} {prompt,7}");

    private static string Peer(double? value) => value is { } v ? v.ToString("F0", CultureInfo.InvariantCulture) : "-";
    private static string Ratio(double ours, double? peer) => peer is { } p && p > 0 ? (ours / p).ToString("F2", CultureInfo.InvariantCulture) : "-";

    /// <summary>Best decode and prefill rates over the repeats (a first, untimed run warms up).</summary>
    private static (double Decode, double Prefill, int Prompt) Measure(LlamaWeights weights, int repeats)
    {
        var model = new LlamaModel(weights);
        int steps = Math.Min(Steps, model.Config.MaxSeqLen);
        var generator = new Generator(model);
        var options = new GenerationOptions { MaxNewTokens = steps - 1, StopTokens = [] };
        double decode = 0;
        for (int r = 0; r <= repeats; r++)
        {
            var result = generator.Generate([model.Config.BosId], options);
            double rate = (result.Tokens.Length - 1) / result.Decode.TotalSeconds;
            if (r > 0) decode = Math.Max(decode, rate);
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
        return (decode, prefill, promptLength);
    }

    /// <summary>run.c's "achieved tok/s" (greedy, 256 steps from BOS, OMP_NUM_THREADS = threads), best of the repeats.</summary>
    private static double? RunC(string runc, string model, string tokenizer, int threads, int repeats)
    {
        double best = 0;
        for (int r = 0; r < repeats; r++)
        {
            var (code, _, stderr) = Exec(runc, [model, "-z", tokenizer, "-n", Steps.ToString(CultureInfo.InvariantCulture), "-t", "0", "-s", "1"],
                new() { ["OMP_NUM_THREADS"] = threads.ToString(CultureInfo.InvariantCulture) });
            var m = Regex.Match(stderr, @"achieved tok/s: ([0-9.]+)");
            if (code != 0 || !m.Success) throw new InvalidOperationException($"run.c ({runc}) exited {code} without a tok/s line: {Tail(stderr)}");
            best = Math.Max(best, double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        }
        return best;
    }

    private static readonly (string Name, QuantFormat? Format, string LlamaType)[] Variants =
    [
        ("F32", null, "F32"), ("Q8_0", QuantFormat.Q8_0, "Q8_0"), ("Q4_0", QuantFormat.Q4_0, "Q4_0"), ("Q4_K", QuantFormat.Q4_K, "Q4_K_M"),
    ];

    private static void QuantizedTable(TextWriter output, bool quick, int repeats, IReadOnlyList<int> threadCounts, string? llamaCpp, string work)
    {
        // stories110M's shape (dim 768, 12 layers, hidden 2048); --quick: dim 256, 4 layers, hidden 768. Every row is
        // a multiple of 256, so all K-quants apply.
        var config = quick
            ? new LlamaConfig { Dim = 256, HiddenDim = 768, Layers = 4, Heads = 4, KvHeads = 4, VocabSize = 32000, MaxSeqLen = 256, TiedEmbeddings = true }
            : new LlamaConfig { Dim = 768, HiddenDim = 2048, Layers = 12, Heads = 12, KvHeads = 12, VocabSize = 32000, MaxSeqLen = 1024, TiedEmbeddings = true };
        string shape = quick ? "dim-256 shape" : "stories110M shape";
        var variants = Variants;
        string? llamaTok = BenchData.Find("tokenizers", "llama2", "tokenizer.bin");
        bool peer = llamaCpp is not null && llamaTok is not null;
        output.WriteLine($"quantised weights, {shape} (random weights, {config.ParameterCount / 1e6:F0}M parameters), decode tok/s; " +
            (peer ? $"GGUF files made by llama.cpp ({llamaCpp}), peer = llama-bench tg{Steps} on the same file"
                  : "weights quantised by our own quantisers (pass --llama-cpp DIR for llama.cpp's files and llama-bench)"));
        output.WriteLine($"{"weights",-8} {"thr",3} {"MB read/token",13} {"ours tok/s",11} {"vs f32",7} {"llama.cpp",10} {"ratio",6}");

        var files = new Dictionary<string, string>();
        if (peer)
        {
            string bin = Path.Combine(work, $"{shape.Replace(' ', '-')}-random.bin");
            using (var cpu = Accelerator.Create(AcceleratorKind.Cpu, 1))
            using (var w = LlamaWeights.Random(cpu, config, seed: 3))
                if (!File.Exists(bin)) Llama2cCheckpoint.Save(w, bin);
            string f32 = Path.ChangeExtension(bin, ".F32.gguf");
            if (!File.Exists(f32))
                Tool(llamaCpp!, "llama-convert-llama2c-to-ggml", ["--copy-vocab-from-model", llamaTok!, "--llama2c-model", bin, "--llama2c-output-model", f32]);
            foreach (var v in variants)
            {
                string file = v.Format is null ? f32 : Path.ChangeExtension(bin, $".{v.LlamaType}.gguf");
                if (!File.Exists(file)) Tool(llamaCpp!, "llama-quantize", [f32, file, v.LlamaType, "2"]);
                files[v.Name] = file;
            }
        }

        foreach (int threads in threadCounts)
        {
            using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads);
            double f32Rate = 0;
            foreach (var v in variants)
            {
                LlamaWeights weights;
                if (peer) weights = GgufCheckpoint.Load(files[v.Name], accelerator, keepQuantized: true);
                else
                {
                    weights = LlamaWeights.Random(accelerator, config, seed: 3);
                    if (v.Format is { } format) KeepQuantized(weights, format);
                }
                using (weights)
                {
                    double bytes = BytesPerToken(weights);
                    var (decode, _, _) = MeasureDecode(weights, repeats);
                    if (v.Format is null) f32Rate = decode;
                    double? theirs = peer ? LlamaBench(llamaCpp!, files[v.Name], threads, repeats) : null;
                    output.WriteLine($"{v.Name,-8} {threads,3} {bytes / 1e6,13:F1} {decode,11:F1} {decode / f32Rate,7:F2} {Peer1(theirs),10} {Ratio(decode, theirs),6}");
                }
            }
        }
    }

    private static string Peer1(double? value) => value is { } v ? v.ToString("F1", CultureInfo.InvariantCulture) : "-";

    private static (double, double, int) MeasureDecode(LlamaWeights weights, int repeats)
    {
        var model = new LlamaModel(weights);
        var generator = new Generator(model);
        var options = new GenerationOptions { MaxNewTokens = Math.Min(Steps, model.Config.MaxSeqLen) - 1, StopTokens = [] };
        double decode = 0;
        for (int r = 0; r <= repeats; r++)
        {
            var result = generator.Generate([model.Config.BosId], options);
            if (r > 0) decode = Math.Max(decode, (result.Tokens.Length - 1) / result.Decode.TotalSeconds);
        }
        return (decode, 0, 0);
    }

    /// <summary>Quantises every projection and the head (the embedding stays float32, as in llama.cpp's files it is only gathered).</summary>
    private static void KeepQuantized(LlamaWeights weights, QuantFormat format)
    {
        foreach (var (name, t) in weights.Named())
            if (t.Rank == 2 && name != weights.TokenEmbedding.Name && t.Dim(1) % QuantFormats.BlockElements(format) == 0)
                weights.KeepQuantized(name, QuantizedMatrix.Quantize(format, t.ToArray(), t.Dim(0), t.Dim(1)));
        if (weights.Config.TiedEmbeddings)
        {
            var t = weights.TokenEmbedding;
            weights.KeepQuantized(t.Name!, QuantizedMatrix.Quantize(format, t.ToArray(), t.Dim(0), t.Dim(1)));
        }
    }

    /// <summary>Weight bytes one decode step reads: each projection and the head (quantised or float32), one embedding row, the norms.</summary>
    private static double BytesPerToken(LlamaWeights weights)
    {
        double bytes = 0;
        foreach (var (name, t) in weights.Named())
        {
            if (name == weights.TokenEmbedding.Name && !weights.Config.TiedEmbeddings) { bytes += 4.0 * t.Dim(1); continue; }
            bytes += weights.Quantized.TryGetValue(name, out var q) ? q.ByteLength : 4.0 * t.Length;
        }
        return bytes;
    }

    /// <summary>llama-bench's tg tokens/s (mean over its repetitions; it warms up first) on a GGUF file.</summary>
    private static double LlamaBench(string dir, string model, int threads, int repeats)
    {
        var (code, stdout, stderr) = Exec(Path.Combine(dir, "llama-bench"),
            ["-m", model, "-p", "0", "-n", Steps.ToString(CultureInfo.InvariantCulture), "-t", threads.ToString(CultureInfo.InvariantCulture),
             "-r", repeats.ToString(CultureInfo.InvariantCulture), "-o", "json"], []);
        if (code != 0) throw new InvalidOperationException($"llama-bench exited {code}: {Tail(stderr)}");
        using var json = JsonDocument.Parse(stdout);
        foreach (var test in json.RootElement.EnumerateArray())
            if (test.GetProperty("n_gen").GetInt32() == Steps) return test.GetProperty("avg_ts").GetDouble();
        throw new InvalidOperationException($"llama-bench printed no tg{Steps} result: {Tail(stdout)}");
    }

    private static void Tool(string dir, string name, string[] args)
    {
        var (code, stdout, stderr) = Exec(Path.Combine(dir, name), args, []);
        if (code != 0) throw new InvalidOperationException($"{name} exited {code}: {Tail(stderr + stdout)}");
    }

    private static (int Code, string Stdout, string Stderr) Exec(string file, string[] args, Dictionary<string, string> env)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        foreach (var (k, v) in env) info.Environment[k] = v;
        using var p = Process.Start(info) ?? throw new InvalidOperationException($"could not start {file}");
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout, stderr.Result);
    }

    private static string Tail(string s) => s.Length > 600 ? s[^600..] : s;
}
