using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Baselines;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Demo;

/// <summary>Where the demo stands: a phase, its work done out of its total, and a short note.</summary>
public readonly record struct DemoProgress(string Phase, int Done, int Total, string Detail);

/// <summary>Passkey results of one method at one context length and needle depth.</summary>
/// <param name="Windows">Context length in base-model windows.</param>
/// <param name="Tokens">Context length in tokens (the prompt plus the answer).</param>
public sealed record DemoAccuracy(string Method, int Windows, int Tokens, double Depth, int Correct, int Trials)
{
    public double Accuracy => (double)Correct / Trials;
}

/// <summary>One phase of the demo: its wall time and a line of what it did.</summary>
public sealed record DemoPhase(string Name, TimeSpan Elapsed, string Summary);

/// <summary>Everything the demo measured.</summary>
public sealed record DemoResult(IReadOnlyList<string> Methods, IReadOnlyList<DemoAccuracy> Results, IReadOnlyList<DemoPhase> Phases,
    TimeSpan Elapsed, string Device, DemoSettings Settings)
{
    /// <summary>A method's accuracy at a length, over every depth and trial.</summary>
    public double Accuracy(string method, int windows)
    {
        var rows = Results.Where(r => r.Method == method && r.Windows == windows).ToList();
        if (rows.Count == 0) throw new ArgumentException($"DemoResult: no result for '{method}' at {windows} windows");
        return (double)rows.Sum(r => r.Correct) / rows.Sum(r => r.Trials);
    }
}

/// <summary>
/// The built-in demo, end to end and without any file: a character vocabulary and seeded passkey documents;
/// a tiny Llama base pre-trained (every weight, AdamW) on window-sized documents, so it learns to copy a key it
/// can see; two UIO memories (encoder LoRA, transfer head, &lt;mem&gt; embedding) trained on documents several
/// windows long, one with naive truncated BPTT and one with the unbiased incremental estimator; then passkey
/// accuracy versus context length and needle depth for the base model alone (its window), StreamingLLM
/// (sinks + window) and both UIO memories. Deterministic for a given seed and thread count.
/// </summary>
public sealed class DemoRunner
{
    public const string PretrainPhase = "pre-training the base";
    public const string EvaluatePhase = "passkey evaluation";

    private const int IgnoreTarget = SegmentLoop.IgnoreTarget;
    private readonly DemoSettings settings;
    private readonly IProgress<DemoProgress>? progress;
    private readonly string? runFolder;
    private readonly CharVocabulary vocabulary = new();
    private readonly PasskeyDocuments documents;
    private readonly List<DemoPhase> phases = [];

    /// <param name="runFolder">Where the UIO trainers keep their metrics and final adapters (one sub-folder each); null: a temporary folder, deleted afterwards.</param>
    public DemoRunner(DemoSettings settings, IProgress<DemoProgress>? progress = null, string? runFolder = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        this.settings = settings;
        this.progress = progress;
        this.runFolder = runFolder;
        documents = new PasskeyDocuments(vocabulary, settings.KeyDigits, settings.DistractorShare);
    }

    public string BaseMethod => $"base (window {settings.Window})";
    public string StreamingMethod => $"StreamingLLM ({settings.StreamingSinks} sinks + {settings.Window - settings.StreamingSinks})";
    public string TbpttMethod => $"UIO + TBPTT (S={settings.EstimatorWindow})";
    public string UnbiasedMethod => $"UIO + unbiased (S={settings.EstimatorWindow})";
    public IReadOnlyList<string> Methods => [BaseMethod, StreamingMethod, TbpttMethod, UnbiasedMethod];

    public DemoResult Run()
    {
        var clock = Stopwatch.StartNew();
        using var accelerator = Accelerator.Create(AcceleratorKind.Auto, settings.Threads);
        using var weights = Pretrain(accelerator);
        var model = new LlamaModel(weights);
        string folder = runFolder ?? Path.Combine(Path.GetTempPath(), "uio-demo-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var tbptt = TrainUio(model, TbpttMethod, Path.Combine(folder, "uio-tbptt"), _ => new TruncatedBptt(settings.EstimatorWindow));
            using var unbiased = TrainUio(model, UnbiasedMethod, Path.Combine(folder, "uio-unbiased"), seed => new UnbiasedIncremental(settings.EstimatorWindow, seed));
            var results = Evaluate(model, tbptt, unbiased);
            return new DemoResult(Methods, results, phases.ToList(), clock.Elapsed, accelerator.Description, settings);
        }
        finally
        {
            if (runFolder is null && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    // ------------------------------------------------------------------ pre-training

    /// <summary>The base model's shape: a tiny Llama over the character vocabulary, context = one window.</summary>
    public LlamaConfig BaseConfig => new()
    {
        Dim = settings.Dim, HiddenDim = settings.HiddenDim, Layers = settings.Layers, Heads = settings.Heads, KvHeads = settings.Heads,
        VocabSize = vocabulary.VocabSize, MaxSeqLen = settings.Window, TiedEmbeddings = true,
        BosId = CharVocabulary.BosId, EosId = CharVocabulary.EosId,
        LocalLayers = settings.LocalLayers, LocalWindow = settings.LocalLayers > 0 ? settings.LocalWindow : 0,
    };

    /// <summary>A window-sized training document for the base: the needle and the question both inside it, BOS half the time.</summary>
    public PasskeyDocument PretrainDocument(long index)
    {
        var random = new Data.SeededRandom(settings.Seed, stream: 500_000 + index);
        bool bos = random.Next(2) == 0;
        return documents.Random(Seeds.Derive(settings.Seed + 7, index), settings.Window + 1, 0, int.MaxValue, bos);
    }

    private LlamaWeights Pretrain(Accelerator accelerator)
    {
        var clock = Stopwatch.StartNew();
        int steps = settings.PretrainSteps, batch = settings.PretrainBatch;
        var weights = LlamaWeights.Random(accelerator, BaseConfig, Seeds.Derive(settings.Seed, 1), scale: 0.05f);
        try
        {
            var model = new LlamaModel(weights, trainable: true);
            var parameters = model.WeightParameters().ToList();
            var kernels = accelerator.Kernels;
            using var optimizer = new AdamW(parameters.Select(p => new AdamWParameter(p, Decay: p.Value.Rank == 2)).ToList(), new AdamWSettings(WeightDecay: 0.01f));
            var schedule = new WarmupCosineSchedule(settings.PretrainLearningRate, steps, Math.Max(1, steps / 20), settings.PretrainLearningRate / 10);
            double loss = 0;
            for (int step = 1; step <= steps; step++)
            {
                foreach (var p in parameters) p.ZeroGrad();
                double sum = 0;
                for (int b = 0; b < batch; b++)
                {
                    var document = PretrainDocument((long)(step - 1) * batch + b);
                    var ids = document.Tokens;
                    var targets = ids[1..];
                    // Every other window scores only the answer: copying the key is a few tokens of 64, and
                    // diluted among the filler it is learned far more slowly.
                    if (b % 2 == 1) Array.Fill(targets, IgnoreTarget, 0, targets.Length - document.AnswerTokens);
                    using var tape = new Tape(accelerator, "pretrain");
                    var l = model.Loss(tape, ids.AsSpan(0, ids.Length - 1), targets);
                    sum += l.Value.ToArray()[0];
                    tape.Backward(l);
                }
                var grads = parameters.Select(p => p.Grad!).ToArray();
                foreach (var g in grads) kernels.Scale(g, 1f / batch, g);
                GradientClipping.ClipGlobalNorm(kernels, grads, 1f);
                optimizer.Step(schedule.At(step));
                loss = step == 1 ? sum / batch : 0.9 * loss + 0.1 * sum / batch;
                progress?.Report(new DemoProgress(PretrainPhase, step, steps, $"loss {loss:F3}"));
            }
            foreach (var p in parameters) p.DisposeLeaf();
            var frozen = new LlamaModel(weights);
            var check = Enumerable.Range(0, 32).Select(i => documents.AtDepth(Seeds.Derive(settings.Seed + 99, i), settings.Window, (i % 8) / 7.0)).ToList();
            double inWindow = check.Count(d => BaseAnswer(frozen, d) == d.Key) / (double)check.Count;
            phases.Add(new DemoPhase(PretrainPhase, clock.Elapsed,
                $"{BaseConfig.ParameterCount:N0} parameters, {steps} steps x {batch} windows of {settings.Window} tokens, final loss {loss:F3}, in-window passkey accuracy {inWindow:P0}"));
            return weights;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    // ------------------------------------------------------------------ UIO training

    /// <summary>The UIO settings: segments of one window, n memory tokens, LoRA rank and alpha for both adapters.</summary>
    public UioConfig UioConfig => new()
    {
        SegmentLength = settings.SegmentLength, MemoryTokens = settings.MemoryTokens,
        EncoderRank = settings.Rank, EncoderAlpha = settings.Alpha, TransferRank = settings.Rank, TransferAlpha = settings.Alpha,
    };

    /// <summary>The UIO training stream: needles more than S segments before the question's segment.</summary>
    public PasskeyTrainingData UioData() =>
        new(documents, Seeds.Derive(settings.Seed, 2), settings.SegmentLength, settings.MinSegments, settings.MaxSegments, settings.EstimatorWindow,
            settings.UioAnswerOnly);

    private UioModel TrainUio(LlamaModel model, string method, string folder, EstimatorFactory estimators)
    {
        var clock = Stopwatch.StartNew();
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        var uio = new UioModel(model, UioConfig, Seeds.Derive(settings.Seed, 3));
        try
        {
            var options = new TrainingOptions
            {
                TotalSteps = settings.UioSteps, DocumentsPerStep = settings.UioDocumentsPerStep, PeakLearningRate = settings.UioLearningRate,
                MinLearningRate = settings.UioLearningRate / 10, WarmupSteps = Math.Max(1, settings.UioSteps / 20), Seed = settings.Seed,
                BaseModelNameOrPath = "uio-demo-base",
            };
            double loss = 0;
            var callbacks = new TrainerCallbacks
            {
                Progress = new SyncProgress<TrainingProgress>(p =>
                {
                    loss = p.Step == 1 ? p.Loss : 0.9 * loss + 0.1 * p.Loss;
                    progress?.Report(new DemoProgress(method, p.Step, p.TotalSteps, $"loss {loss:F3}"));
                }),
            };
            using (var trainer = new Trainer(uio, UioData(), estimators, options, folder, callbacks))
                trainer.Run();
            phases.Add(new DemoPhase(method, clock.Elapsed,
                $"{settings.UioSteps} steps x {settings.UioDocumentsPerStep} documents of {settings.MinSegments}-{settings.MaxSegments} segments of {settings.SegmentLength} tokens, final loss {loss:F3}"));
            return uio;
        }
        catch
        {
            uio.Dispose();
            throw;
        }
    }

    // ------------------------------------------------------------------ evaluation

    /// <summary>The evaluation prompts: for every length and depth, <see cref="DemoSettings.Trials"/> documents (seeded).</summary>
    public IEnumerable<(int Windows, double Depth, PasskeyDocument Document)> EvaluationDocuments()
    {
        int index = 0;
        foreach (int windows in settings.EvalWindows)
            foreach (double depth in settings.Depths)
                for (int trial = 0; trial < settings.Trials; trial++)
                    yield return (windows, depth, documents.AtDepth(Seeds.Derive(settings.Seed + 1_000_003, index++), windows * settings.Window, depth));
    }

    private List<DemoAccuracy> Evaluate(LlamaModel model, UioModel tbptt, UioModel unbiased)
    {
        var clock = Stopwatch.StartNew();
        var answerers = new (string Method, Func<PasskeyDocument, string> Answer)[]
        {
            (BaseMethod, d => BaseAnswer(model, d)),
            (StreamingMethod, d => StreamingAnswer(model, d)),
            (TbpttMethod, d => UioAnswer(tbptt, d)),
            (UnbiasedMethod, d => UioAnswer(unbiased, d)),
        };
        var prompts = EvaluationDocuments().ToList();
        int total = prompts.Count * answerers.Length, done = 0;
        var results = new List<DemoAccuracy>();
        foreach (var group in prompts.GroupBy(p => (p.Windows, p.Depth)))
        {
            foreach (var (method, answer) in answerers)
            {
                int correct = 0, trials = 0;
                foreach (var (_, _, document) in group)
                {
                    if (answer(document) == document.Key) correct++;
                    trials++;
                    progress?.Report(new DemoProgress(EvaluatePhase, ++done, total, $"{method}, {group.Key.Windows} windows"));
                }
                results.Add(new DemoAccuracy(method, group.Key.Windows, group.Key.Windows * settings.Window, group.Key.Depth, correct, trials));
            }
        }
        phases.Add(new DemoPhase(EvaluatePhase, clock.Elapsed, $"{prompts.Count} prompts x {answerers.Length} methods"));
        return results;
    }

    private GenerationOptions Greedy => new() { MaxNewTokens = documents.KeyTokens, Temperature = 0, StopTokens = [] };

    /// <summary>The base model reads only the last window (minus room for the answer) of the prompt.</summary>
    private string BaseAnswer(LlamaModel model, PasskeyDocument document)
    {
        var prompt = document.Prompt;
        int keep = Math.Min(prompt.Length, settings.Window - documents.KeyTokens);
        return vocabulary.Decode(new Generator(model).Generate(prompt[^keep..], Greedy).Tokens);
    }

    private string StreamingAnswer(LlamaModel model, PasskeyDocument document)
    {
        using var streaming = new StreamingLlm(model, settings.Window - settings.StreamingSinks, settings.StreamingSinks);
        streaming.Feed(document.Prompt);
        var generated = new int[documents.KeyTokens];
        for (int i = 0; i < generated.Length; i++)
        {
            generated[i] = Sampler.ArgMax(streaming.LastLogits);
            if (i + 1 < generated.Length) streaming.Feed([generated[i]]);
        }
        return vocabulary.Decode(generated);
    }

    private string UioAnswer(UioModel uio, PasskeyDocument document)
    {
        using var session = new UioSession(uio);
        session.Prefill(document.Prompt);
        return vocabulary.Decode(session.Generate(Greedy).Tokens);
    }

    /// <summary>Reports on the caller's thread, in order (System.Progress posts to the thread pool).</summary>
    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
