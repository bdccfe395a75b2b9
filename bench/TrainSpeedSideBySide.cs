using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;
using static UioLlm.Bench.TrainingBenchSupport;

namespace UioLlm.Bench;

/// <summary>
/// Speed of one UIO training step on the stories15M shape (random weights): l = 256, n = 32, the unbiased
/// incremental estimator with S = 2, one document of 4 segments (1025 tokens). Reports decoder tokens per
/// second and effective GFLOP/s (the matrix FLOPs the step needs, <see cref="UioStepFlops"/>), then where
/// the time goes: the four phases (decoder forward/backward, encoder forward/backward) timed separately,
/// and the main kernels at the step's shapes timed alone.
/// </summary>
internal static class TrainSpeedSideBySide
{
    private const int Segments = 4, ReservoirSize = 2;
    private static readonly UioConfig Config = new()
    {
        SegmentLength = 256, MemoryTokens = 32, EncoderRank = 16, EncoderAlpha = 32, TransferRank = 16, TransferAlpha = 32,
    };

    public static void Run(TextWriter output, bool quick, IReadOnlyList<int>? threadCounts, bool stepOnly = false, int? repeatCount = null)
    {
        threadCounts ??= [1, 2];
        int repeats = repeatCount ?? (quick ? 2 : 5);
        var shape = LlamaConfig.Stories15MShape with { MaxSeqLen = 1024 };
        var flops = new UioStepFlops(shape, Config);
        var document = new int[Segments * Config.SegmentLength + 1];
        var rng = new Random(3);
        for (int i = 0; i < document.Length; i++) document[i] = rng.Next(shape.VocabSize);

        output.WriteLine($"base: stories15M shape (dim 288, 6 layers, 6 heads, vocab 32000; random weights); UIO l={Config.SegmentLength} n={Config.MemoryTokens}, " +
            $"LoRA r=16; {new UnbiasedIncremental(ReservoirSize, 1).Name}; one document of {Segments} segments ({document.Length} tokens); best of {repeats} steps");
        output.WriteLine($"FLOPs per step (matrix work only): decoder fwd {Sum(flops.DecoderForward) / 1e9:F2} G + bwd {Sum(flops.DecoderBackward) / 1e9:F2} G; " +
            $"encoder fwd {flops.EncoderForward() / 1e9:F2} G and bwd {flops.EncoderBackward() / 1e9:F2} G per segment");
        var rows = new List<string>();
        foreach (int threads in threadCounts)
        {
            using var accelerator = Accelerator.Create(AcceleratorKind.Cpu, threads);
            using var weights = LlamaWeights.Random(accelerator, shape, seed: 1);
            using var uio = new UioModel(new LlamaModel(weights), Config, seed: 1);
            RandomiseAdapters(uio, seed: 2, std: 0.02);
            rows.Add(Step(uio, document, flops, threads, repeats));
            if (stepOnly) continue;
            Phases(output, uio, document, flops, threads, repeats);
            Kernels(output, accelerator, shape, threads, repeats);
        }
        output.WriteLine();
        output.WriteLine($"{"thr",3} {"s/step",8} {"dec tok/s",10} {"GFLOP/step",11} {"GFLOP/s",8} {"median",8} {"steal",6} {"enc fwd/bwd run",15}");
        foreach (var row in rows) output.WriteLine(row);
        output.WriteLine("s/step, tok/s and GFLOP/s: best step; median: GFLOP/s of the median step; steal: CPU time the hypervisor took during the steps");
        output.WriteLine("target (issue): >= 100 effective GFLOP/s on 2 threads (llm.c's plain-C trainer: ~30 on a same-size GPT-2)");
    }

    private static double Sum(Func<int, double> perSegment) => Enumerable.Range(0, Segments).Sum(perSegment);

    /// <summary>Whole steps through the estimator (gradients zeroed before each); the first one warms up.</summary>
    private static string Step(UioModel uio, int[] document, UioStepFlops flops, int threads, int repeats)
    {
        var times = new List<double>();
        EstimatorCounters? counters = null;
        var stealBefore = CpuSteal.Read();
        for (int r = 0; r <= repeats; r++)
        {
            foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
            var estimator = new UnbiasedIncremental(ReservoirSize, seed: 1);
            var clock = Stopwatch.StartNew();
            estimator.Accumulate(uio, document);
            double seconds = clock.Elapsed.TotalSeconds;
            if (r > 0 || repeats == 0) times.Add(seconds);
            counters = estimator.Counters;
        }
        string steal = CpuSteal.Share(stealBefore, CpuSteal.Read());
        times.Sort();
        double best = times[0], median = times[times.Count / 2];
        // The estimator does not encode the last segment (nothing reads its memory); count at most T-1 forwards anyway.
        double work = flops.Step(Segments, Math.Min(counters!.EncoderForwards, Segments - 1), counters.EncoderBackwards);
        int decoderTokens = Segments * uio.Config.SegmentLength;
        return $"{threads,3} {best,8:F3} {decoderTokens / best,10:F0} {work / 1e9,11:F2} {work / best / 1e9,8:F1} {work / median / 1e9,8:F1} {steal,6} {counters.EncoderForwards,9}/{counters.EncoderBackwards}";
    }

    /// <summary>CPU time the hypervisor gave to other guests (Linux /proc/stat "steal"): on a VM it explains slow runs.</summary>
    private static class CpuSteal
    {
        public static (long Steal, long Total)? Read()
        {
            try
            {
                if (!OperatingSystem.IsLinux()) return null;
                var line = File.ReadLines("/proc/stat").First(l => l.StartsWith("cpu ", StringComparison.Ordinal));
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Take(8).Select(long.Parse).ToArray();
                return f.Length == 8 ? (f[7], f.Sum()) : null;
            }
            catch (IOException)
            {
                return null;
            }
        }

        public static string Share((long Steal, long Total)? before, (long Steal, long Total)? after) =>
            before is { } b && after is { } a && a.Total > b.Total ? $"{100.0 * (a.Steal - b.Steal) / (a.Total - b.Total),5:F1}%" : "n/a";
    }

    /// <summary>
    /// The step's four phases timed apart (as full BPTT would run them: every memory's graph kept and
    /// backpropagated once at the end), each with its FLOPs and rate.
    /// </summary>
    private static void Phases(TextWriter output, UioModel uio, int[] document, UioStepFlops flops, int threads, int repeats)
    {
        var best = new double[4];
        Array.Fill(best, double.MaxValue);
        for (int r = 0; r <= repeats; r++)
        {
            var times = OnePhasedStep(uio, document);
            if (r == 0) continue;
            for (int i = 0; i < 4; i++) best[i] = Math.Min(best[i], times[i]);
        }
        double[] work = [Sum(flops.DecoderForward), Sum(flops.DecoderBackward), Segments * flops.EncoderForward(), (Segments - 1) * flops.EncoderBackward()];
        string[] names = ["decoder forward (x4)", "decoder backward (x3)", "encoder forward (x4)", "encoder backward (x3)"];
        output.WriteLine();
        output.WriteLine($"phases, {threads} thread(s) (best of {repeats} each):");
        output.WriteLine($"  {"phase",-22} {"ms",8} {"GFLOP",7} {"GFLOP/s",8}");
        for (int i = 0; i < 4; i++)
            output.WriteLine($"  {names[i],-22} {best[i] * 1e3,8:F1} {work[i] / 1e9,7:F2} {work[i] / best[i] / 1e9,8:F1}");
        output.WriteLine($"  {"sum",-22} {best.Sum() * 1e3,8:F1} {work.Sum() / 1e9,7:F2} {work.Sum() / best.Sum() / 1e9,8:F1}");
    }

    /// <summary>Seconds spent in decoder forward, decoder backward, encoder forward, encoder backward.</summary>
    private static double[] OnePhasedStep(UioModel uio, int[] document)
    {
        int l = uio.Config.SegmentLength;
        var times = new double[4];
        var graphs = new List<(Tape Tape, Memory Memory, Memory Leaves)>();
        try
        {
            for (int t = 0; t < Segments; t++)
            {
                var tokens = document.AsSpan(t * l, l);
                using (var tape = new Tape(uio.Accelerator))
                {
                    var clock = Stopwatch.StartNew();
                    var loss = uio.DecoderLoss(tape, tokens, document.AsSpan(t * l + 1, l), graphs.Select(g => g.Leaves).ToArray());
                    times[0] += clock.Elapsed.TotalSeconds;
                    clock.Restart();
                    if (t > 0) tape.Backward(loss);
                    times[1] += clock.Elapsed.TotalSeconds;
                }
                var encoderTape = new Tape(uio.Accelerator);
                var encode = Stopwatch.StartNew();
                var memory = uio.Compress(encoderTape, tokens);
                times[2] += encode.Elapsed.TotalSeconds;
                graphs.Add((encoderTape, memory, memory.Detach()));
            }
            foreach (var (tape, memory, leaves) in graphs.Take(Segments - 1))
            {
                var clock = Stopwatch.StartNew();
                tape.Backward(memory.States, leaves.States.Select(v => v.Grad!).ToArray());
                times[3] += clock.Elapsed.TotalSeconds;
            }
        }
        finally
        {
            foreach (var (tape, _, leaves) in graphs)
            {
                tape.Dispose();
                leaves.DisposeLeaves();
            }
        }
        return times;
    }

    /// <summary>The step's main kernels at its shapes, timed alone, with how often one step calls them.</summary>
    private static void Kernels(TextWriter output, Accelerator accelerator, LlamaConfig c, int threads, int repeats)
    {
        var k = accelerator.Kernels;
        int q = Config.SegmentLength, e = q + Config.MemoryTokens, d = c.Dim, h = c.HiddenDim, vocab = c.VocabSize, heads = c.Heads, hd = c.HeadDim;
        var rng = new Random(7);
        Tensor Filled(params int[] shape)
        {
            var t = accelerator.Allocate(shape);
            var span = t.Span;
            for (int i = 0; i < span.Length; i++) span[i] = (float)(rng.NextDouble() * 0.2 - 0.1);
            return t;
        }
        using var x = Filled(e, d);
        using var xh = Filled(e, h);
        using var dx = Filled(e, d);
        using var dxh = Filled(e, h);
        using var wHead = Filled(vocab, d);
        using var wDD = Filled(d, d);
        using var wHD = Filled(h, d);
        using var wDH = Filled(d, h);
        using var logits = Filled(q, vocab);
        using var dLogits = Filled(q, vocab);
        using var lse = Filled(q);
        using var yD = Filled(e, d);
        using var yH = Filled(e, h);
        using var loraA = Filled(16, d);
        using var loraB = Filled(d, 16);
        using var xa = Filled(e, 16);
        using var dA = Filled(16, d);
        using var dB = Filled(d, 16);
        int prefix = (Segments - 1) * Config.MemoryTokens;   // the last segment's memory rows
        using var aq = Filled(q, heads, hd);
        using var ak = Filled(prefix + q, heads, hd);
        using var av = Filled(prefix + q, heads, hd);
        using var ao = Filled(q, heads, hd);
        using var aLse = Filled(heads, q);
        using var adq = Filled(q, heads, hd);
        using var adk = Filled(prefix + q, heads, hd);
        using var adv = Filled(prefix + q, heads, hd);
        using var eq = Filled(e, heads, hd);
        using var ek = Filled(e, heads, hd);
        using var ev = Filled(e, heads, hd);
        using var eo = Filled(e, heads, hd);
        using var eLse = Filled(heads, e);
        using var edq = Filled(e, heads, hd);
        using var edk = Filled(e, heads, hd);
        using var edv = Filled(e, heads, hd);
        using var normWeight = Filled(d);
        using var rstd = Filled(e);
        using var dGate = Filled(e, h);
        using var dUp = Filled(e, h);
        int[] targets = Enumerable.Range(0, q).Select(i => rng.Next(vocab)).ToArray();
        var decoderMask = AttentionMask.CausalMask(prefixLength: prefix);
        var encoderMask = AttentionMask.StepExpansion(Config.MemoryTokens, Config.Stride);
        double decoderPairs = (double)q * prefix + q * (q + 1.0) / 2;
        var flops = new UioStepFlops(c, Config);
        // The step's weights are frozen, so its GEMMs read them from pre-packed panels: so do these.
        foreach (var w in new[] { wHead, wDD, wHD, wDH }) w.Freeze();
        var xq = x.Slice(0, q);
        var dxq = dx.Slice(0, q);

        // (name, FLOPs or 0, calls per step, the kernel call)
        var cases = new (string Name, double Flops, double Calls, Action Run)[]
        {
            ("head fwd 256x288 -> 32000 (NT)", 2.0 * q * d * vocab, Segments, () => k.MatMul(xq, wHead, logits, transB: true)),
            ("head bwd dX 256x32000 -> 288 (NN)", 2.0 * q * d * vocab, Segments - 1, () => k.MatMulBackward(xq, wHead, dLogits, dxq, null, transB: true)),
            ("cross-entropy fwd 256x32000 (no gradient)", 0, 1, () => k.CrossEntropy(logits, targets, lse)),
            ("cross-entropy + gradient in place 256x32000", 0, Segments - 1, () => k.CrossEntropyWithGradient(dLogits, targets, lse, dLogits)),
            ("block fwd, 7 projections, 288 rows", Block(e, d, h), Segments * (2 * c.Layers - 1), () => BlockForward(k, x, xh, wDD, wDH, wHD, yD, yH)),
            ("block bwd dX, 7 projections, 288 rows", Block(e, d, h), (Segments - 1) * (2 * c.Layers - 1), () => BlockBackward(k, x, xh, wDD, wDH, wHD, yD, yH, dx, dxh)),
            ("LoRA fwd 288x288 r16 (incl. its W)", 2.0 * e * d * d + 2.0 * e * 16 * 2 * d, 2 * Segments * (c.Layers - 1), () => k.LoraMatMul(x, wDD, loraA, loraB, 2f, yD, xa)),
            ("LoRA bwd 288x288 r16 (incl. its W)", 2.0 * e * d * d + 4.0 * e * 16 * 2 * d, 2 * (Segments - 1) * (c.Layers - 1), () => k.LoraMatMulBackward(x, wDD, loraA, loraB, 2f, xa, yD, dx, dA, dB)),
            ($"decoder attention fwd ({prefix} mem + 256)", 4.0 * d * decoderPairs, Segments * c.Layers, () => k.Attention(aq, ak, av, ao, aLse, decoderMask)),
            ($"decoder attention bwd ({prefix} mem + 256)", 8.0 * d * decoderPairs, (Segments - 1) * c.Layers, () => k.AttentionBackward(aq, ak, av, ao, ao, aLse, decoderMask, adq, adk, adv)),
            ("encoder attention fwd (256 + 32 mem)", 4.0 * d * flops.EncoderPairs(), Segments * (c.Layers - 1), () => k.Attention(eq, ek, ev, eo, eLse, encoderMask)),
            ("encoder attention bwd (256 + 32 mem)", 8.0 * d * flops.EncoderPairs(), (Segments - 1) * (c.Layers - 1), () => k.AttentionBackward(eq, ek, ev, eo, eo, eLse, encoderMask, edq, edk, edv)),
            // Glue: per block two RMSNorms, one SwiGLU, two residual adds (288 rows stand for the decoder's 256 too).
            ("RMSNorm fwd 288x288", 0, 2 * Segments * (2 * c.Layers - 1), () => k.RmsNorm(x, normWeight, yD, rstd, 1e-5f)),
            ("RMSNorm bwd 288x288", 0, 2 * (Segments - 1) * (2 * c.Layers - 1), () => k.RmsNormBackward(x, normWeight, rstd, yD, dx, null)),
            ("SwiGLU fwd 288x768", 0, Segments * (2 * c.Layers - 1), () => k.SwiGlu(xh, yH, dxh)),
            ("SwiGLU bwd 288x768", 0, (Segments - 1) * (2 * c.Layers - 1), () => k.SwiGluBackward(xh, yH, dxh, dGate, dUp)),
            ("residual add 288x288", 0, 2 * Segments * (2 * c.Layers - 1), () => k.Add(x, yD, dx)),
            ("fill 288x768 (a zeroed grad buffer)", 0, 4 * (Segments - 1) * (2 * c.Layers - 1), () => k.Fill(dGate, 0f)),
        };
        output.WriteLine($"kernels alone, {threads} thread(s) (best of {repeats * 4}; calls/step approximate the step: attention cases at the last segment's memory):");
        output.WriteLine($"  {"kernel",-42} {"ms",7} {"GFLOP/s",8} {"calls",6} {"ms/step",8}");
        double total = 0;
        foreach (var (name, work, calls, run) in cases)
        {
            run();
            double best = double.MaxValue;
            for (int r = 0; r < repeats * 4; r++)
            {
                var clock = Stopwatch.StartNew();
                run();
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            total += best * calls;
            string rate = work > 0 ? (work / best / 1e9).ToString("F1") : "-";
            output.WriteLine($"  {name,-42} {best * 1e3,7:F2} {rate,8} {calls,6:F0} {best * calls * 1e3,8:F1}");
        }
        output.WriteLine($"  {"sum of the above",-42} {"",7} {"",8} {"",6} {total * 1e3,8:F1}");
    }

    private static double Block(int m, int d, int h) => 2.0 * m * d * (4.0 * d + 3.0 * h);

    private static void BlockForward(IKernels k, Tensor x, Tensor xh, Tensor wDD, Tensor wDH, Tensor wHD, Tensor yD, Tensor yH)
    {
        for (int i = 0; i < 4; i++) k.MatMul(x, wDD, yD, transB: true);    // Q, K, V, O
        k.MatMul(x, wHD, yH, transB: true);                                // gate
        k.MatMul(x, wHD, yH, transB: true);                                // up
        k.MatMul(xh, wDH, yD, transB: true);                               // down
    }

    private static void BlockBackward(IKernels k, Tensor x, Tensor xh, Tensor wDD, Tensor wDH, Tensor wHD, Tensor yD, Tensor yH, Tensor dx, Tensor dxh)
    {
        for (int i = 0; i < 4; i++) k.MatMulBackward(x, wDD, yD, dx, null, transB: true);   // Q, K, V, O
        k.MatMulBackward(x, wHD, yH, dx, null, transB: true);                              // gate
        k.MatMulBackward(x, wHD, yH, dx, null, transB: true);                              // up
        k.MatMulBackward(xh, wDH, yD, dxh, null, transB: true);                            // down
    }
}
